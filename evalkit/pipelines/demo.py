"""The offline end-to-end job behind ``evalkit demo``, written against the Python API.

Trains a standard, a PGD-AT and an AT+CAS small CNN on the bundled Fashion-MNIST subset
(:func:`evalkit.training.api.train`), evaluates each with the protocol's ``fast`` preset and
the minimum-norm robustness curve (:func:`evalkit.evaluation.api.evaluate`, ``curve=True``),
runs the analyses of :func:`demo_analyses` on all
three (:func:`evalkit.analyses.analyze`: channel magnitude/uniformity, and activation-value
distributions natural vs adversarial at two layers per model) and renders the report
(:func:`evalkit.reporting.report`). Sizes fit about 3.5 minutes on two CPU cores (3.4 measured,
most of it the four-eps sweep of the evaluation); ``fast``
shrinks them further for tests. Nothing touches the network.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from evalkit.errors import EvalkitError

MARKER = ".evalkit-demo"
DATASET = "fashion-mnist-mini"
MODELS = (("standard", "standard"), ("pgd-at", "at"), ("at-cas", "at+cas"))


@dataclass(frozen=True)
class DemoSizes:
    """How much work each stage does; the defaults fit about 3.5 minutes on two CPU cores."""

    n_train: int = 4000
    epochs: int = 4
    batch_size: int = 64
    width: int = 16
    attack_steps: int = 3  # PGD steps while training the AT models
    lr: float = 0.05
    val_size: int = 200
    val_attack_steps: int = 3
    n_eval: int = 300
    n_analysis: int = 200
    analysis_steps: int = 10
    analysis_values: int = 20000  # activation values kept per (layer, kind) for the plots
    preset: str = "fast"
    eps: str = "8/255"  # training, analyses and the headline of the evaluation
    #: the evaluation's eps sweep (the headline ``eps`` first): the report's accuracy-vs-eps
    #: curves have a point at each, plus clean accuracy at 0
    eval_eps: tuple[str, ...] = ("8/255", "2/255", "4/255", "6/255")
    curve_steps: int = 100  # FMN iterations of the robustness curve (evaluate(curve=True))


FAST = DemoSizes(
    n_train=600,
    epochs=1,
    width=8,
    attack_steps=2,
    n_eval=64,
    n_analysis=32,
    analysis_steps=3,
    analysis_values=4000,
    val_size=64,
    val_attack_steps=2,
    curve_steps=10,
)


def demo_analyses(sizes: DemoSizes) -> list[tuple[str, dict[str, Any]]]:
    """``(analysis name, its options)`` run on all three models, in report order; adding an
    analysis to the demo is one line here. ``distributions`` plots activation values and
    per-channel means, natural vs PGD, at two layers of each model (the analysis's default: the
    stage before the penultimate one and the penultimate one, before any CAS mask).

    Raises :class:`EvalkitError` when one of them is not registered (its module did not import),
    so the demo never silently drops a section of its report.
    """
    from evalkit.analyses import get_analysis

    wanted = [
        ("channels", {"steps": sizes.analysis_steps}),
        ("distributions", {"steps": sizes.analysis_steps, "max_values": sizes.analysis_values}),
    ]
    return [(name, _accepted(get_analysis(name).fn, options)) for name, options in wanted]


def _accepted(fn: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The options ``fn`` takes (all of them when it takes ``**kwargs``)."""
    import inspect

    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(options)
    return {k: v for k, v in options.items() if k in params}


def _say(text: str) -> None:
    tqdm.write(text, file=sys.stderr)


def prepare_out(out: Path) -> None:
    """Create ``out``; a previous demo folder is cleared, any other non-empty folder refused."""
    if out.exists() and not out.is_dir():
        raise EvalkitError(f"--out {out} is a file (pick a folder)")
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise EvalkitError(
                f"--out {out} is not empty and holds no earlier demo (pick a new or empty folder)"
            )
        for name in ("models", "runs", "analysis"):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in ("report.html", "report.pdf"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(
        "written by 'evalkit demo'; the demo may clear this folder on rerun\n"
    )


def train_models(out: Path, sizes: DemoSizes, device: str, seed: int) -> dict[str, Path]:
    """The three checkpoints, keyed by short name."""
    from evalkit.training.api import train

    ckpts = {}
    for name, defense in MODELS:
        _say(
            f"[demo] training {name} ({defense}, smallcnn width {sizes.width}, {sizes.epochs} "
            f"epoch(s) on {sizes.n_train} images)"
        )
        ckpts[name] = train(
            dataset=DATASET,
            arch="smallcnn",
            defense=defense,
            epochs=sizes.epochs,
            out=out / "models" / name,
            seed=seed,
            width=sizes.width,
            lr=sizes.lr,
            batch_size=sizes.batch_size,
            schedule="cosine",
            eps=sizes.eps,
            attack_steps=sizes.attack_steps,
            n_train=sizes.n_train,
            val_size=sizes.val_size,
            val_attack_steps=sizes.val_attack_steps,
            device=device,
        )
    return ckpts


def evaluate_models(
    out: Path, ckpts: dict[str, Path], sizes: DemoSizes, device: str, seed: int
) -> dict[str, Any]:
    """The protocol's preset on each checkpoint; returns the results by name."""
    from evalkit.evaluation.api import evaluate

    results = {}
    for name, ckpt in ckpts.items():
        _say(
            f"[demo] attacking {name}: preset '{sizes.preset}' at eps "
            f"{', '.join(sizes.eval_eps)} on {sizes.n_eval} test images"
        )
        results[name] = evaluate(
            ckpt,
            n=sizes.n_eval,
            out=out / "runs" / name,
            preset=sizes.preset,
            eps=list(sizes.eval_eps),
            seed=seed,
            device=device,
            echo=False,
            curve=True,
            curve_steps=sizes.curve_steps,
        )
    return results


def analyze_models(
    out: Path, ckpts: dict[str, Path], sizes: DemoSizes, device: str, seed: int
) -> list[Any]:
    """Every analysis of :func:`demo_analyses` on all three models; their results."""
    from evalkit.analyses import analyze

    results = []
    for name, options in demo_analyses(sizes):
        _say(f"[demo] {name} analysis of all three models on {sizes.n_analysis} test images")
        results.append(
            analyze(
                {label: str(path) for label, path in ckpts.items()},
                analysis=name,
                n=sizes.n_analysis,
                eps=sizes.eps,
                out=out / "analysis" / name,
                device=device,
                seed=seed,
                **options,
            )
        )
    return results


def run_demo(
    out: str | Path,
    *,
    fast: bool = False,
    device: str = "auto",
    seed: int = 0,
    pdf: bool = True,
    sizes: DemoSizes | None = None,
) -> dict[str, Any]:
    """The whole job; returns paths, per-model accuracies and the wall time."""
    from evalkit.reporting import report
    from reports.pdf import pdf_available

    sizes = sizes or (FAST if fast else DemoSizes())
    out = Path(out)
    prepare_out(out)
    t0 = time.perf_counter()
    stages = tqdm(
        total=4, desc="evalkit demo", unit="stage", file=sys.stderr, position=0, leave=True
    )
    try:
        stages.set_postfix_str("train")
        ckpts = train_models(out, sizes, device, seed)
        stages.update()
        stages.set_postfix_str("attack")
        results = evaluate_models(out, ckpts, sizes, device, seed)
        stages.update()
        stages.set_postfix_str("analyze")
        analyses = analyze_models(out, ckpts, sizes, device, seed)
        stages.update()
        stages.set_postfix_str("report")
        reason = pdf_available() if pdf else "not requested"
        if reason is not None and pdf:
            _say(f"[demo] no PDF: {reason}")
        pdf_path = out / "report.pdf" if reason is None else None
        html = report(
            list(results.values()),
            analyses=analyses,
            out=out / "report.html",
            pdf=pdf_path,
            title=f"evalkit demo: standard vs PGD-AT vs AT+CAS on {DATASET} "
            f"(preset '{sizes.preset}')",
        )
        stages.update()
    finally:
        stages.close()
    wall = time.perf_counter() - t0
    models = {}
    for name, r in results.items():
        rows = r.summary.get("worst_case") or [{}]
        worst = rows[0]
        models[name] = {
            "clean_accuracy": r.summary.get("clean_accuracy"),
            "clean_accuracy_ci": r.summary.get("clean_accuracy_ci"),
            "worst_case_robust_accuracy": worst.get("robust_accuracy"),
            "worst_case_robust_accuracy_ci": worst.get("robust_accuracy_ci"),
            "eps": worst.get("eps"),
            "sweep": [
                {
                    "eps": w.get("eps"),
                    "eps_value": w.get("eps_value"),
                    "robust_accuracy": w.get("robust_accuracy"),
                    "robust_accuracy_ci": w.get("robust_accuracy_ci"),
                }
                for w in sorted(rows, key=lambda w: w.get("eps_value") or 0.0)
            ],
        }
    return {
        "report": html,
        "pdf": pdf_path,
        "wall_time_s": wall,
        "models": models,
        "sizes": asdict(sizes),
    }
