"""``evalkit.evaluate``: the whole robustness protocol on any PyTorch model, from Python.

>>> import evalkit
>>> result = evalkit.evaluate(model, (x, y), eps="8/255", preset="fast", out="runs/eval")
>>> result.robust_accuracy, result.summary["flags"]

Around the engine (:mod:`evalkit.evaluation.engine`, which only sees a model and tensors) this
module does the edges: it loads or adopts the model and data, learns the model's traits
(auxiliary heads, randomness, bounded logits, gradient-computed masks), makes the protocol
adaptive to them, binds the run directory to content hashes, runs the checks within their
budget, and writes ``config.json``, ``summary.json`` and ``examples.parquet`` (formats:
docs/run-directory.md). The protocol itself is described in docs/protocol.md.
"""

from __future__ import annotations

import io
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn as nn

from evalkit import __version__
from evalkit.attacks.eot import is_model_random
from evalkit.attacks.mode import attack_mode
from evalkit.defenses.context import (
    has_aux_heads,
    has_bounded_logits,
    has_mask_gradients,
    is_stochastic,
)
from evalkit.errors import EvalkitError
from evalkit.evaluation import distributed as D
from evalkit.evaluation import sanity as S
from evalkit.evaluation.budget import Budget, check_norm, check_positive_int, parse_budgets
from evalkit.evaluation.engine import Settings, n_batches, run_protocol
from evalkit.evaluation.estimate import estimate, probe_rate
from evalkit.evaluation.inputs import (
    check_match,
    check_shape,
    count_classes,
    fingerprints,
    resolve_data,
    resolve_model,
)
from evalkit.evaluation.protocol import (
    AttackPlan,
    ModelTraits,
    adapt_plans,
    get_preset,
    select_attacks,
)
from evalkit.evaluation.rundir import RecordLog, prepare_run_dir
from evalkit.evaluation.summary import format_table, json_safe, per_example_table, summarize
from evalkit.evaluation.units import CostCounter
from evalkit.utils.device import resolve_device
from evalkit.utils.io import atomic_write_bytes, atomic_write_json
from evalkit.utils.seeding import derive_seed

SCHEMA_VERSION = 2
LOSSES = ("ce", "cw", "dlr")


@dataclass
class EvalResult:
    """What :func:`evaluate` returns (and writes to ``run_dir`` when one was given)."""

    summary: dict[str, Any]
    examples: pd.DataFrame
    run_dir: Path | None = None
    fingerprints: dict[str, Any] = field(default_factory=dict)

    @property
    def clean_accuracy(self) -> float:
        """Clean accuracy (Monte-Carlo mean over draws for randomized models)."""
        return float(self.summary["clean_accuracy"])

    @property
    def robust_accuracy(self) -> float:
        """Worst-case robust accuracy at the first eps."""
        return float(self.summary["worst_case"][0]["robust_accuracy"])

    def __repr__(self) -> str:
        return format_table(self.summary)


ADAPTABLE = ("aux_heads", "stochastic", "bounded_logits", "mask_gradients")


def _check_adapt_for(adapt_for: dict[str, bool] | None) -> dict[str, bool]:
    unknown = sorted(set(adapt_for or {}) - set(ADAPTABLE))
    if unknown:
        raise EvalkitError(
            f"adapt_for has unknown traits {', '.join(unknown)} (known: {', '.join(ADAPTABLE)})"
        )
    return {k: bool(v) for k, v in (adapt_for or {}).items()}


def union_traits(models: list[nn.Module]) -> dict[str, bool]:
    """The traits any of ``models`` has, for ``evaluate(..., adapt_for=...)``: models compared
    with each other then face the union of the adaptive attacks any of them needs."""
    return {
        "aux_heads": any(has_aux_heads(m) for m in models),
        "stochastic": any(is_stochastic(m) for m in models),
        "bounded_logits": any(has_bounded_logits(m) for m in models),
        "mask_gradients": any(has_mask_gradients(m) for m in models),
    }


def _as_list(v: list[str] | str | None) -> list[str] | None:
    if v is None:
        return None
    if isinstance(v, str):
        return [t.strip() for t in v.split(",") if t.strip()]
    return [str(t) for t in v]


def _traits(model: nn.Module, x: torch.Tensor, num_classes: int, params: dict, seed: int):
    beta = float(params.get("cas_beta", params.get("cifs_beta", params.get("beta", 2.0))))
    torch.manual_seed(derive_seed(seed, "random-probe"))
    with attack_mode(model):
        random = bool(is_model_random(model, x))
    return ModelTraits(
        aux_heads=has_aux_heads(model),
        stochastic=is_stochastic(model),
        random_detected=random,
        bounded_logits=has_bounded_logits(model),
        mask_gradients=has_mask_gradients(model),
        beta=beta,
        num_classes=num_classes,
    )


def _protocol_text(
    preset: str,
    plans: list[AttackPlan],
    budgets: list[Budget],
    n: int,
    compaction: bool,
    draws: int,
) -> str:
    lines = [
        f"evaluation protocol (preset {preset}): {n} examples, norm {budgets[0].norm}, eps "
        f"{', '.join(b.label for b in budgets)}, "
        + (
            "compaction on (each attack gets only the points still robust; per-attack numbers "
            "are cumulative)"
            if compaction
            else "no compaction (independent per-attack numbers)"
        )
        + (f"; Monte-Carlo scoring over {draws} draws" if draws > 1 else "")
    ]
    lines += [f"  {i}. {p.line()}" for i, p in enumerate(plans, 1)]
    return "\n".join(lines)


def _environment(device: torch.device, info: D.DistInfo) -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "evalkit": __version__,
        "python": platform.python_version(),
        "device": str(device),
        "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "world_size": info.world_size,
    }


def _parse_normalize(text: Any) -> tuple[list[float], list[float]] | None:
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    if isinstance(text, (tuple, list)) and len(text) == 2:
        mean, std = [float(v) for v in text[0]], [float(v) for v in text[1]]
    else:
        raw = str(text)
        try:
            if ";" in raw:
                m, s = raw.split(";", 1)
                mean = [float(v) for v in m.split(",")]
                std = [float(v) for v in s.split(",")]
            else:
                m, s = raw.split(",", 1)
                mean, std = [float(m)], [float(s)]
        except ValueError:
            raise EvalkitError(
                f"cannot read normalize {raw!r} (write 'MEAN,STD' or 'M1,M2,M3;S1,S2,S3')"
            ) from None
    if any(v != v or abs(v) == float("inf") for v in mean + std) or any(v <= 0 for v in std):
        raise EvalkitError("normalize needs finite means and positive finite stds")
    return mean, std


def evaluate(
    model: nn.Module | str | Path,
    data: Any = None,
    *,
    eps: str | float | list[str | float] | None = None,
    norm: str | None = None,
    preset: str = "default",
    attacks: list[str] | str | None = None,
    n: int | None = None,
    batch_size: int = 128,
    seed: int = 0,
    device: str | torch.device = "auto",
    mc_draws: int = 20,
    eot: int | None = None,
    loss: str | None = None,
    compaction: bool = True,
    sanity: bool = True,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    echo: bool = True,
    weights: str | Path | None = None,
    defense: str | None = None,
    params: dict[str, Any] | None = None,
    arch: str | None = None,
    dataset: str | None = None,
    normalize: Any = None,
    force_normalize: bool = False,
    data_root: str | Path | None = None,
    download: bool = False,
    adapt_for: dict[str, bool] | None = None,
) -> EvalResult:
    """Evaluate ``model``'s robustness on ``data`` under a protocol; returns an :class:`EvalResult`.

    Args:
        model: any ``nn.Module`` mapping images ``(N, C, H, W)`` in [0, 1] to logits
            ``(N, classes)`` (use :func:`evalkit.wrap` for own preprocessing or non-tensor
            outputs), or a path/spec string (evalkit checkpoint, state_dict + ``arch``,
            TorchScript, ``pkg.module:factory``, ...).
        data: ``(x, y)`` tensors (x uint8 0-255 or float 0-1), a DataLoader, a ``.npz``/``.pt``
            path, a dataset name (test split), or None for the checkpoint's dataset.
        eps: budget(s) in pixel units, e.g. ``"8/255"``, ``0.5`` or ``["4/255", "8/255"]``;
            default: the preset's for Linf, 0.5 for L2. Range: (0, 1] for Linf, (0, sqrt(CHW)]
            for L2.
        norm: ``linf`` (default) or ``l2``.
        preset: ``default``, ``fast``, ``aa-fast``, ``pgd``, ``study-cpu``, ``paper-*``.
        attacks: explicit list replacing the preset's attacks; they are made adaptive in place
            and adaptive additions the model needs are reported as left out.
        n: evaluate the first ``n`` examples. batch_size: examples per unit of work.
        mc_draws: forward passes per candidate for randomized models (Monte-Carlo scoring).
        eot: EOT samples per gradient (default 20 for randomized models, 1 otherwise).
        loss: override the loss of every gradient attack except CW (``ce``, ``cw``, ``dlr``).
        compaction: attack only points still robust (AutoAttack-style waterfall).
        sanity: run the checks (within 25% of the attack cost).
        out: run directory (None: in memory). resume: continue ``out`` after a kill; refused
            when the model, data, protocol or versions changed.
        weights: weights file for a ``pkg.module:factory`` / ``file.py:factory`` model.
        defense, params: test-time defense to add (e.g. ``sap``) and defense parameters
            (e.g. ``{"cifs_adaptive": True}``).
        adapt_for: traits to adapt to in addition to the model's own, e.g.
            ``{"bounded_logits": True, "aux_heads": True}``: a comparison of several models
            passes the union of their traits (:func:`union_traits`) so every model faces the
            same attacks. Keys: ``aux_heads``, ``stochastic``, ``bounded_logits``,
            ``mask_gradients``.

    Raises:
        EvalkitError: one line naming the fix, for every bad input.

    Follows AutoAttack's protocol ideas (Croce & Hein, ICML 2020) and Athalye et al. (ICML
    2018) for randomized defenses (EOT).
    """
    t_start = time.perf_counter()
    batch_size = check_positive_int("batch_size", batch_size)
    mc_draws = check_positive_int("mc_draws", mc_draws)
    seed = check_positive_int("seed", seed, minimum=0)
    if n is not None:
        n = check_positive_int("n", n)
    if eot is not None:
        eot = check_positive_int("eot", eot)
    if loss is not None and loss not in LOSSES:
        raise EvalkitError(f"loss must be ce, cw or dlr, not {loss!r}")
    if resume and out is None:
        raise EvalkitError("resume needs out= (the run directory to continue)")
    chosen = get_preset(preset)
    norm = check_norm(norm, chosen.norm)
    names = _as_list(attacks)
    plans = select_attacks(chosen, names, norm)
    norm_pair = _parse_normalize(normalize)

    dev = resolve_device(device) if not isinstance(device, torch.device) else device
    info = D.setup(dev)
    try:
        return _evaluate(
            model=model,
            data=data,
            eps=eps,
            norm=norm,
            preset=chosen,
            plans=plans,
            explicit=bool(names),
            n=n,
            settings=dict(
                batch_size=batch_size,
                seed=seed,
                compaction=compaction,
                progress=progress,
            ),
            mc_draws=mc_draws,
            eot=eot,
            loss=loss,
            sanity=sanity,
            out=Path(out) if out is not None else None,
            resume=resume,
            echo=echo,
            load=dict(
                weights=weights,
                arch=arch,
                dataset=dataset,
                normalize=norm_pair,
                force_normalize=force_normalize,
                defense=defense,
                params=params,
            ),
            data_opts=dict(data_root=data_root, download=download),
            adapt_for=_check_adapt_for(adapt_for),
            device=D.device_for(dev, info),
            info=info,
            t_start=t_start,
        )
    finally:
        D.teardown(info)


def _evaluate(
    *,
    model,
    data,
    eps,
    norm,
    preset,
    plans,
    explicit,
    n,
    settings,
    mc_draws,
    eot,
    loss,
    sanity,
    out,
    resume,
    echo,
    load,
    data_opts,
    adapt_for,
    device,
    info,
    t_start,
) -> EvalResult:
    def say(text: str) -> None:
        if echo and info.is_main:
            print(text, flush=True)

    m = resolve_model(model, device=device, **load)
    d = resolve_data(data, dataset=load["dataset"] or m.dataset, n=n, **data_opts)
    check_shape(m, d)
    probe_x, _ = d.examples.fetch(torch.arange(min(16, len(d.examples))))
    probe_x = probe_x.to(device)
    num_classes = count_classes(m.model, probe_x)
    if m.num_classes is not None and int(m.num_classes) != num_classes:
        raise EvalkitError(
            f"the model returns {num_classes} logits but its metadata says {m.num_classes} classes"
        )
    check_match(m, d, num_classes)
    budgets = parse_budgets(eps, norm, preset_eps=preset.eps, input_shape=d.shape)
    params = {**m.defense_params, **(load["params"] or {})}
    traits = _traits(m.model, probe_x, num_classes, params, settings["seed"])
    if adapt_for:
        traits = replace(traits, **{k: getattr(traits, k) or v for k, v in adapt_for.items()})
    draws = mc_draws if traits.random else 1
    plans, adaptive = adapt_plans(plans, traits, eot=eot, loss=loss, explicit=explicit)
    cfg = Settings(draws=draws, **settings)
    prints = fingerprints(m, d)

    n_points = len(d.examples)
    config = {
        **prints,
        "model": m.description,
        "data": d.source,
        "n": n_points,
        "batch_size": cfg.batch_size,
        "eps": [b.label for b in budgets],
        "norm": norm,
        "seed": cfg.seed,
        "preset": preset.name,
        "plans": [p.describe() for p in plans],
        "compaction": cfg.compaction,
        "mc_draws": draws,
        "sanity": sanity,
        "evalkit_version": __version__,
        "torch_version": torch.__version__,
    }
    if out is not None:
        err = None
        if info.is_main:
            try:
                prepare_run_dir(out, config, resume=resume, is_writer=True)
            except EvalkitError as exc:
                err = str(exc)
        err = D.broadcast_object(err, info)
        if err:
            raise EvalkitError(err)
    say(_protocol_text(preset.name, plans, budgets, n_points, cfg.compaction, draws))
    for a in adaptive:
        ran = ", ".join(a["attacks"]) or "none"
        extra = f"; left out: {', '.join(a['left_out'])}" if a.get("left_out") else ""
        say(f"  adaptive: {a['name']} ({a['reason']}) -> {ran}{extra}")
    with attack_mode(m.model):
        rate = probe_rate(m.model, probe_x[:8])
    say("  " + estimate(plans, budgets, n_points, draws, rate).line())

    log = RecordLog(out, info.rank)
    owned = [b for b in range(n_batches(n_points, cfg.batch_size)) if info.owns(b)]
    counter = CostCounter(m.model)
    try:
        with attack_mode(m.model):
            run_protocol(
                m.model,
                d.examples,
                plans,
                budgets,
                traits=traits,
                settings=cfg,
                device=device,
                counter=counter,
                records=log.records,
                record=log.add,
                batches=owned,
            )
        records = D.gather_records(dict(log.records), info)
        summary = None
        if info.is_main:
            summary, df = _finish(
                m,
                d,
                records,
                plans,
                budgets,
                traits,
                adaptive,
                preset,
                cfg,
                sanity,
                num_classes,
                device,
                info,
                counter,
                log,
                prints,
                t_start,
            )
    finally:
        log.close()
        counter.close()
    summary = D.broadcast_object(summary, info)
    if not info.is_main:
        df = pd.DataFrame()
    if out is not None and info.is_main:
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        atomic_write_bytes(out / "examples.parquet", buf.getvalue())
        atomic_write_json(out / "summary.json", summary)
    say(format_table(summary))
    if out is not None:
        say(f"run directory: {out}")
    return EvalResult(summary, df, out, prints)


def _finish(
    m,
    d,
    records,
    plans,
    budgets,
    traits,
    adaptive,
    preset,
    cfg,
    sanity,
    num_classes,
    device,
    info,
    counter,
    log,
    prints,
    t_start,
):
    names = m.class_names
    df = per_example_table(records, plans, budgets, cfg.compaction, names)
    numbers = summarize(df, records, plans, budgets, cfg.compaction, num_classes, names, cfg.draws)
    flags = S.randomness_flags(traits, cfg.draws)
    probes: list[AttackPlan] = []
    sanity_cost: dict[str, Any] = {"propagations": 0, "share_of_protocol": 0.0, "skipped": True}
    if sanity:
        numbers["compaction"] = cfg.compaction
        with attack_mode(m.model):
            more, probes, sanity_cost = S.run_checks(
                m.model,
                d.examples.fetch,
                df,
                numbers,
                plans,
                budgets,
                traits,
                seed=cfg.seed,
                draws=cfg.draws,
                device=device,
                counter=counter,
                records=records,
                record=log.add,
            )
        flags += more
        if probes:
            all_plans = [*plans, *probes]
            df = per_example_table(records, all_plans, budgets, cfg.compaction, names)
            numbers = summarize(
                df, records, all_plans, budgets, cfg.compaction, num_classes, names, cfg.draws
            )
    numbers["compaction"] = cfg.compaction
    flags = S.check_ball_violations(numbers) + S.nonfinite_flags(numbers) + flags
    if m.unfinished:
        flags.insert(
            0,
            S.flag(
                "unfinished_training",
                "warning",
                f"unfinished training run: the checkpoint is at {m.unfinished}; its numbers "
                "describe a model still in training",
            ),
        )
    for a in adaptive:
        if a.get("left_out"):
            flags.append(
                S.flag(
                    "adaptive_attack_left_out",
                    "warning",
                    f"the model needs {a['name']} ({', '.join(a['left_out'])}) but the explicit "
                    "attack list left it out: the robust accuracy may be overstated",
                )
            )
    numbers["cost"]["sanity"] = sanity_cost
    numbers["cost"]["wall_time_s"] = time.perf_counter() - t_start
    summary: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        **numbers,
        "seed": cfg.seed,
        "flags": flags,
        "adaptive": adaptive,
        "model": m.description,
        "fingerprints": prints,
        "traits": asdict(traits),
        "data": {"source": d.source, "n": len(d.examples)},
        "protocol": {
            "preset": preset.name,
            "description": preset.description,
            "norm": budgets[0].norm,
            "eps": [b.label for b in budgets],
            "attacks": [p.describe() for p in plans],
            "probes": [p.describe() for p in probes],
            "compaction": cfg.compaction,
            "batch_size": cfg.batch_size,
            "sanity": sanity,
            "mc_draws": cfg.draws,
            "robust_accuracy_meaning": (
                "cumulative: mean robust score of all examples after this attack and every "
                "attack before it (AutoAttack-style waterfall)"
                if cfg.compaction
                else "independent: mean robust score against the clean input and this attack"
            ),
        },
        "environment": _environment(device, info),
    }
    return json_safe(summary), df
