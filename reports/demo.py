"""The offline end-to-end job behind ``evalkit demo``.

Trains a standard, a PGD-AT and an AT+CAS small CNN on the bundled Fashion-MNIST subset,
evaluates each with the harness's ``fast`` preset, runs the channel study on all three and
renders the report. Sizes are chosen so the whole job fits in about three minutes on two CPU
cores; ``--fast`` shrinks them further for tests. Nothing touches the network.
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
    """How much work each stage does; the defaults fit the three-minute budget."""

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
    preset: str = "fast"
    eps: str = "8/255"


FAST = DemoSizes(
    n_train=600,
    epochs=1,
    width=8,
    attack_steps=2,
    n_eval=64,
    n_analysis=32,
    analysis_steps=3,
    val_size=64,
    val_attack_steps=2,
)


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
    from evalkit.training import TrainConfig, train
    from evalkit.utils.parse import parse_eps

    ckpts = {}
    for name, defense in MODELS:
        _say(
            f"[demo] training {name} ({defense}, smallcnn width {sizes.width}, {sizes.epochs} epoch(s) "
            f"on {sizes.n_train} images)"
        )
        cfg = TrainConfig(
            dataset=DATASET,
            arch="smallcnn",
            defense=defense,
            epochs=sizes.epochs,
            out=str(out / "models" / name),
            lr=sizes.lr,
            batch_size=sizes.batch_size,
            schedule="cosine",
            eps=parse_eps(sizes.eps),
            attack_steps=sizes.attack_steps,
            arch_kwargs={"width": sizes.width},
            n_train=sizes.n_train,
            val_size=sizes.val_size,
            val_attack_steps=sizes.val_attack_steps,
            seed=seed,
            device=device,
        )
        ckpts[name] = Path(train(cfg))
    return ckpts


def evaluate_models(
    out: Path, ckpts: dict[str, Path], sizes: DemoSizes, device: str, seed: int
) -> dict[str, dict[str, Any]]:
    """Run the harness's fast preset on each checkpoint; returns the summaries."""
    from evalkit.evaluation import EvalConfig, evaluate

    summaries = {}
    for name, ckpt in ckpts.items():
        _say(
            f"[demo] attacking {name}: preset '{sizes.preset}' at eps {sizes.eps} on {sizes.n_eval} test images"
        )
        summaries[name] = evaluate(
            EvalConfig(
                ckpt=ckpt,
                n=sizes.n_eval,
                out=out / "runs" / name,
                preset=sizes.preset,
                eps=[sizes.eps],
                seed=seed,
                device=device,
                echo=False,
            )
        )
    return summaries


def analyze_models(
    out: Path, ckpts: dict[str, Path], sizes: DemoSizes, device: str, seed: int
) -> Path:
    """The channel study (CAS Figures 1-2) on all three models, through ``evalkit analyze``."""
    from evalkit.cli import main as cli_main

    _say(f"[demo] channel analysis of all three models on {sizes.n_analysis} test images")
    target = out / "analysis" / "channels"
    argv = [
        "analyze",
        "--study",
        "channels",
        "--n",
        str(sizes.n_analysis),
        "--eps",
        sizes.eps,
        "--steps",
        str(sizes.analysis_steps),
        "--out",
        str(target),
        "--device",
        device,
        "--seed",
        str(seed),
    ]
    for ckpt in ckpts.values():
        argv += ["--ckpt", str(ckpt)]
    rc = cli_main(argv)
    if rc != 0:
        raise EvalkitError(
            f"the channel analysis failed (exit {rc}); rerun it alone: evalkit {' '.join(argv)}"
        )
    return target


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
    from reports.builder import build_report
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
        summaries = evaluate_models(out, ckpts, sizes, device, seed)
        stages.update()
        stages.set_postfix_str("analyze")
        analysis_dir = analyze_models(out, ckpts, sizes, device, seed)
        stages.update()
        stages.set_postfix_str("report")
        reason = pdf_available() if pdf else "not requested"
        if reason is not None and pdf:
            _say(f"[demo] no PDF: {reason}")
        written = build_report(
            [out / "runs" / name for name in ckpts],
            out / "report.html",
            analysis_dirs=[analysis_dir],
            pdf=out / "report.pdf" if reason is None else None,
            title=f"evalkit demo: standard vs PGD-AT vs AT+CAS on {DATASET} (preset '{sizes.preset}')",
        )
        stages.update()
    finally:
        stages.close()
    wall = time.perf_counter() - t0
    models = {}
    for name, s in summaries.items():
        worst = (s.get("worst_case") or [{}])[-1]
        models[name] = {
            "clean_accuracy": s.get("clean_accuracy"),
            "worst_case_robust_accuracy": worst.get("robust_accuracy"),
            "eps": worst.get("eps"),
        }
    return {
        "report": written["html"],
        "pdf": written.get("pdf"),
        "wall_time_s": wall,
        "models": models,
        "sizes": asdict(sizes),
    }
