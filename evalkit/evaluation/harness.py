"""The evaluation harness: ``evaluate(EvalConfig(...)) -> summary dict``.

Work is cut into *units*: the clean pass over one batch, and one attack at one eps on one
batch. Under compaction (the default, as AutoAttack does) an attack only receives the points of
its batch that are clean-correct and unbroken by the attacks before it, so the per-attack
numbers are the cumulative "waterfall" and the last one equals the worst case. Every unit is
seeded by ``derive_seed(seed, attack, eps, batch)`` and recorded on disk as it completes, which
makes ``--resume`` and ``torchrun`` sharding produce the same summary as one uninterrupted
process. The model is attacked in eval mode (``attack_mode``) and the caller's mode restored.
"""

from __future__ import annotations

import io
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn as nn
from tqdm import tqdm

from evalkit import __version__
from evalkit.attacks.registry import ATTACKS, get_attack
from evalkit.checkpoint import CheckpointMeta, load_model
from evalkit.data import ArraySplit, dataset_info
from evalkit.defenses.context import has_aux_heads, has_bounded_logits, is_stochastic
from evalkit.errors import DataError, EvalkitError
from evalkit.evaluation import distributed as D
from evalkit.evaluation import sanity as S
from evalkit.evaluation.compat import attack_mode, is_model_random
from evalkit.evaluation.protocol import (
    AttackPlan,
    ModelTraits,
    adapt_plans,
    get_preset,
    select_attacks,
)
from evalkit.evaluation.rundir import RecordLog, prepare_run_dir, unit_key
from evalkit.evaluation.summary import (
    format_table,
    json_safe,
    per_example_table,
    robust_before,
    summarize,
)
from evalkit.evaluation.units import CostCounter, attack_unit, build_loss, clean_unit
from evalkit.utils.device import resolve_device
from evalkit.utils.io import atomic_write_bytes, atomic_write_json
from evalkit.utils.parse import parse_eps_list
from evalkit.utils.seeding import derive_seed

SCHEMA_VERSION = 1
NORMS = ("linf", "l2")


@dataclass
class EvalConfig:
    """Everything one evaluation needs; the CLI fills it from flags (see ``evalkit attack -h``).

    ``eps`` and ``norm`` default to the preset's; ``attacks`` (names such as ``fgsm``, ``pgd``,
    ``cw``, ``autoattack``, ``square``, ``foolbox:Name``) default to the preset's list. ``out``
    None keeps everything in memory (no run directory, no resume).
    """

    ckpt: str | Path
    attacks: list[str] | str | None = None
    eps: list[str] | str | None = None
    norm: str | None = None
    n: int | None = None
    batch_size: int = 128
    data: str | Path | None = None
    dataset: str | None = None
    data_root: str | Path | None = None
    download: bool = False
    arch: str | None = None
    normalize: str | None = None
    defense: str | None = None
    out: str | Path | None = None
    resume: bool = False
    seed: int = 0
    device: str = "auto"
    preset: str = "default"
    eot: int | None = None
    loss: str | None = None
    compaction: bool = True
    sanity: bool = True
    progress: bool = True
    echo: bool = True


def _as_list(v: list[str] | str | None) -> list[str] | None:
    if v is None:
        return None
    if isinstance(v, str):
        return [t.strip() for t in v.split(",") if t.strip()]
    return [str(t) for t in v]


def _load(cfg: EvalConfig, device: torch.device) -> tuple[nn.Module, CheckpointMeta, ArraySplit]:
    from evalkit.commands.common import load_eval_data, parse_normalize

    model, meta = load_model(
        cfg.ckpt,
        arch=cfg.arch,
        dataset=cfg.dataset,
        normalize=parse_normalize(cfg.normalize),
        defense=cfg.defense,
        device=device,
    )
    ns = SimpleNamespace(
        data=str(cfg.data) if cfg.data else None,
        dataset=cfg.dataset,
        data_root=cfg.data_root,
        download=cfg.download,
        n=cfg.n,
    )
    data = load_eval_data(ns, meta)
    if len(data) == 0:
        raise DataError("no examples to evaluate (check --n and the data file)")
    return model, meta, data


def _traits(
    model: nn.Module, meta: CheckpointMeta, x_probe: torch.Tensor, seed: int
) -> ModelTraits:
    params = meta.defense_params or {}
    beta = float(params.get("cas_beta", params.get("cifs_beta", params.get("beta", 2.0))))
    torch.manual_seed(derive_seed(seed, "random-probe"))
    with attack_mode(model):
        random = is_model_random(model, x_probe)
    return ModelTraits(
        aux_heads=has_aux_heads(model),
        stochastic=is_stochastic(model),
        random_detected=random,
        bounded_logits=has_bounded_logits(model),
        beta=beta,
    )


def _say(cfg: EvalConfig, info: D.DistInfo, text: str) -> None:
    if cfg.echo and info.is_main:
        print(text, flush=True)


def _protocol_text(
    preset_name: str,
    plans: list[AttackPlan],
    eps: list[tuple[str, float]],
    norm: str,
    compaction: bool,
    n: int,
) -> str:
    lines = [
        f"evaluation protocol (preset {preset_name}): {n} examples, norm {norm}, eps "
        f"{', '.join(e for e, _ in eps)}, "
        + (
            "compaction on (each attack gets only the points still robust; per-attack numbers "
            "are cumulative)"
            if compaction
            else "no compaction (independent per-attack numbers)"
        )
    ]
    for i, p in enumerate(plans, 1):
        lines.append(f"  {i}. {p.line()}")
    return "\n".join(lines)


def evaluate(cfg: EvalConfig) -> dict[str, Any]:
    """Run the protocol on the checkpoint and return the summary (also written to ``cfg.out``)."""
    t_start = time.perf_counter()
    device = resolve_device(cfg.device)
    info = D.setup(device)
    try:
        return _evaluate(cfg, D.device_for(device, info), info, t_start)
    finally:
        D.teardown(info)


def _evaluate(
    cfg: EvalConfig, device: torch.device, info: D.DistInfo, t_start: float
) -> dict[str, Any]:
    if cfg.batch_size < 1:
        raise EvalkitError(f"--batch-size must be >= 1, got {cfg.batch_size}")
    if cfg.eot is not None and cfg.eot < 1:
        raise EvalkitError(f"--eot must be >= 1 (1 disables EOT), got {cfg.eot}")
    if cfg.resume and cfg.out is None:
        raise EvalkitError("--resume needs --out DIR (the run directory to continue)")
    preset = get_preset(cfg.preset)
    norm = (cfg.norm or preset.norm).lower()
    if norm not in NORMS:
        raise EvalkitError(f"--norm must be linf or l2, not {cfg.norm!r}")
    eps_list = parse_eps_list(",".join(_as_list(cfg.eps)) if cfg.eps else preset.eps)
    if cfg.loss is not None and cfg.loss not in ("ce", "cw", "dlr"):
        raise EvalkitError(f"--loss must be ce, cw or dlr, not {cfg.loss!r}")
    plans = select_attacks(preset, _as_list(cfg.attacks), norm, ATTACKS)
    for p in plans:
        get_attack(p.attack)  # unknown foolbox names fail here, before any work

    model, meta, data = _load(cfg, device)
    num_classes = meta.num_classes
    class_names = ()
    if meta.dataset:
        try:
            class_names = dataset_info(meta.dataset).class_names
        except EvalkitError:
            class_names = ()
    traits = _traits(
        model, meta, data.float_batch(slice(0, min(16, len(data)))).to(device), cfg.seed
    )
    plans, adaptive = adapt_plans(plans, traits, eot=cfg.eot, loss=cfg.loss)

    n = len(data)
    n_batches = (n + cfg.batch_size - 1) // cfg.batch_size
    out = Path(cfg.out) if cfg.out is not None else None
    config = {
        "ckpt": str(cfg.ckpt),
        "data": str(cfg.data) if cfg.data else None,
        "dataset": cfg.dataset or meta.dataset,
        "n": n,
        "batch_size": cfg.batch_size,
        "eps": [e for e, _ in eps_list],
        "norm": norm,
        "seed": cfg.seed,
        "preset": preset.name,
        "plans": [p.describe() for p in plans],
        "compaction": cfg.compaction,
        "arch": cfg.arch,
        "defense": cfg.defense,
        "normalize": cfg.normalize,
        "sanity": cfg.sanity,
        "eot": cfg.eot,
        "loss": cfg.loss,
        "evalkit_version": __version__,
    }
    if out is not None:
        err = None
        if info.is_main:
            try:
                prepare_run_dir(out, config, resume=cfg.resume, is_writer=True)
            except EvalkitError as exc:
                err = str(exc)
        err = D.broadcast_object(err, info)
        if err:
            raise EvalkitError(err)
    log = RecordLog(out, info.rank)
    _say(cfg, info, _protocol_text(preset.name, plans, eps_list, norm, cfg.compaction, n))
    for a in adaptive:
        _say(cfg, info, f"  adaptive: {a['name']} ({a['reason']}) -> {', '.join(a['attacks'])}")
    if traits.random_detected and not traits.stochastic:
        _say(
            cfg,
            info,
            "  note: the model's output changed between two forward passes on the same "
            "input although no module declares randomness; treating it as randomised",
        )

    owned = [b for b in range(n_batches) if info.owns(b)]
    counter = CostCounter(model)
    try:
        with attack_mode(model):
            _run_units(
                cfg, model, data, owned, plans, eps_list, norm, log, counter, traits, device, info
            )
    finally:
        log.close()
        counter.close()

    records = D.gather_records(dict(log.records), info)
    summary = None
    if info.is_main:
        summary = _finish(
            cfg,
            model,
            meta,
            data,
            records,
            plans,
            eps_list,
            norm,
            n_batches,
            traits,
            adaptive,
            preset,
            class_names,
            num_classes,
            out,
            device,
            info,
            t_start,
        )
    summary = D.broadcast_object(summary, info)
    return summary


def _batch(data: ArraySplit, b: int, bs: int, device: torch.device):
    idx = torch.arange(b * bs, min((b + 1) * bs, len(data)))
    return idx, data.float_batch(idx).to(device), data.y[idx].to(device)


def _run_units(
    cfg: EvalConfig,
    model: nn.Module,
    data: ArraySplit,
    owned: list[int],
    plans: list[AttackPlan],
    eps_list: list[tuple[str, float]],
    norm: str,
    log: RecordLog,
    counter: CostCounter,
    traits: ModelTraits,
    device: torch.device,
    info: D.DistInfo,
) -> None:
    bs = cfg.batch_size
    bar = dict(
        file=sys.stderr, disable=not (cfg.progress and info.is_main), leave=True, dynamic_ncols=True
    )
    todo = [b for b in owned if log.get(unit_key("clean", b)) is None]
    for b in tqdm(todo, desc="clean", unit="batch", **bar):
        idx, x, y = _batch(data, b, bs, device)
        log.add(clean_unit(model, x, y, idx, b, counter, derive_seed(cfg.seed, "clean", b)))
    for eps_label, eps in eps_list:
        for k, plan in enumerate(plans):
            fn = get_attack(plan.attack).fn
            todo = [b for b in owned if log.get(unit_key("attack", b, plan.id, eps_label)) is None]
            pbar = tqdm(
                total=len(owned),
                initial=len(owned) - len(todo),
                unit="batch",
                desc=f"{plan.id} @ {eps_label}",
                **bar,
            )
            for b in todo:
                alive = robust_before(log.records, b, plans, k, eps_label, cfg.compaction)
                keep = torch.tensor([i for i, ok in alive.items() if ok], dtype=torch.long)
                idx = keep
                x = data.float_batch(idx).to(device) if len(idx) else torch.empty(0)
                y = data.y[idx].to(device)
                rec = attack_unit(
                    model,
                    x,
                    y,
                    idx,
                    plan,
                    fn,
                    eps_label,
                    eps,
                    norm,
                    b,
                    derive_seed(cfg.seed, plan.id, eps_label, b),
                    counter,
                    traits.beta,
                )
                log.add(rec)
                pbar.update(1)
                pbar.set_postfix(attacked=len(idx))
            pbar.close()


def _environment(device: torch.device, info: D.DistInfo) -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "evalkit": __version__,
        "python": platform.python_version(),
        "device": str(device),
        "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "world_size": info.world_size,
    }


def _sanity(
    cfg: EvalConfig,
    model: nn.Module,
    data: ArraySplit,
    df,
    summary: dict[str, Any],
    plans: list[AttackPlan],
    eps_list: list[tuple[str, float]],
    norm: str,
    traits: ModelTraits,
    num_classes: int,
    device: torch.device,
) -> list[dict[str, Any]]:
    flags: list[dict[str, Any]] = []
    if traits.stochastic:
        flags.append(
            S.flag(
                "randomness_detected",
                "info",
                "the model declares a stochastic "
                "defense: gradient attacks use EOT and AutoAttack runs 'rand'; "
                "predictions are single draws",
            )
        )
    elif traits.random_detected:
        flags.append(
            S.flag(
                "randomness_detected",
                "warning",
                "two forward passes on the same "
                "input differed although no module declares randomness: EOT was "
                "turned on; check the model for dropout/noise left active at test",
            )
        )
    flags += S.check_ball_violations(summary)
    if not cfg.sanity:
        return flags
    flags += S.check_eps_monotone(summary)
    correct = df.loc[df["clean_correct"], "index"].to_numpy()[: S.SANITY_N]  # read at call time
    if len(correct) == 0:
        return flags
    idx = torch.as_tensor(correct.copy(), dtype=torch.long)
    x, y = data.float_batch(idx).to(device), data.y[idx].to(device)
    grad_plan = next((p for p in plans if p.uses_loss and p.joint), None) or next(
        (p for p in plans if p.uses_loss), None
    )
    loss = (
        build_loss(grad_plan, traits.beta)
        if grad_plan
        else build_loss(AttackPlan("ce", "pgd", "pgd"), traits.beta)
    )
    with attack_mode(model):
        torch.manual_seed(derive_seed(cfg.seed, "sanity"))
        flags += S.check_gradients(model, x, y, loss)
        flags += S.check_huge_eps(model, x, y, loss, num_classes, derive_seed(cfg.seed, "huge-eps"))
        square_ids = [
            p.id
            for i, p in enumerate(plans)
            if p.attack == "square" and any(q.white_box for q in plans[:i])
        ]
        if any(p.attack == "square" for p in plans):
            flags += S.check_square_in_suite(summary, square_ids)
        else:
            eps_label, eps = max(eps_list, key=lambda e: e[1])
            alive = df.loc[df[f"worst@{eps_label}:robust"], "index"].to_numpy()[: S.SQUARE_N]
            if len(alive):
                ia = torch.as_tensor(alive.copy(), dtype=torch.long)
                flags += S.check_square(
                    model,
                    data.float_batch(ia).to(device),
                    data.y[ia].to(device),
                    eps_label,
                    eps,
                    norm,
                    derive_seed(cfg.seed, "square"),
                    ATTACKS,
                    n_queries=S.SQUARE_QUERIES,
                )
    return flags


def _finish(
    cfg: EvalConfig,
    model: nn.Module,
    meta: CheckpointMeta,
    data: ArraySplit,
    records: dict[str, dict[str, Any]],
    plans: list[AttackPlan],
    eps_list: list[tuple[str, float]],
    norm: str,
    n_batches: int,
    traits: ModelTraits,
    adaptive: list[dict[str, Any]],
    preset,
    class_names,
    num_classes: int,
    out: Path | None,
    device: torch.device,
    info: D.DistInfo,
    t_start: float,
) -> dict[str, Any]:
    eps_labels = [e for e, _ in eps_list]
    df = per_example_table(records, n_batches, plans, eps_labels, cfg.compaction, class_names)
    numbers = summarize(df, records, plans, eps_list, cfg.compaction, num_classes, class_names)
    numbers["compaction"] = cfg.compaction
    flags = _sanity(
        cfg, model, data, df, numbers, plans, eps_list, norm, traits, num_classes, device
    )
    model_desc = meta.describe()
    summary: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        **numbers,
        "seed": cfg.seed,
        "flags": flags,
        "adaptive": adaptive,
        "model": model_desc,
        "traits": asdict(traits),
        "data": {
            "source": str(cfg.data) if cfg.data else (cfg.dataset or meta.dataset),
            "n": len(data),
        },
        "protocol": {
            "preset": preset.name,
            "description": preset.description,
            "norm": norm,
            "eps": eps_labels,
            "attacks": [p.describe() for p in plans],
            "compaction": cfg.compaction,
            "batch_size": cfg.batch_size,
            "sanity": cfg.sanity,
            "robust_accuracy_meaning": (
                "cumulative: fraction of all examples still robust after this attack and every "
                "attack before it (AutoAttack-style waterfall)"
                if cfg.compaction
                else "independent: fraction of all examples this attack alone failed to break"
            ),
        },
        "environment": _environment(device, info),
    }
    summary["cost"]["wall_time_s"] = time.perf_counter() - t_start
    summary = json_safe(summary)
    if out is not None:
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        atomic_write_bytes(out / "examples.parquet", buf.getvalue())
        atomic_write_json(out / "summary.json", summary)
    _say(cfg, info, format_table(summary))
    if out is not None:
        _say(cfg, info, f"run directory: {out}")
    return summary
