"""Feature-map size and pooling study (RCM, arXiv 2202.12435; seeds.md 5).

RCM's claim: a larger feature map before *average* pooling resists perturbations better, while
max pooling does not benefit. The argument is per example: global average pooling divides a
perturbation of the map by the number of locations it does not cover, so
``||GAP(f(x')) - GAP(f(x))|| <= mean_hw ||f_hw(x') - f_hw(x)||`` and the left side shrinks as
the map grows unless the change is spatially uniform; a max pool passes the largest local change
straight through.

This module measures, per model: the map size before pooling, clean and PGD accuracy, the
pooled-feature change ``||pool(f(x')) - pool(f(x))||`` (absolute and relative to
``||pool(f(x))||``) and the bound's right side. ``python -m analysis.pooling`` trains the
CPU-scale grid (smallcnn width 8 on the bundled Fashion-MNIST; strides 1222/1221/1221 with x2
upsampling -> 4/7/14 maps, avg and max pooling; PGD-AT 2 epochs on 2000 images) with the evalkit
trainer and runs the study: about 11 CPU-minutes (662 s user time measured). ``1111`` (28x28
maps) can be added with ``--configs``; it costs several times more.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn as nn

from analysis.common import ModelEntry, accuracy, batches, craft_adversarial, eval_mode, progress
from analysis.io import AnalysisWriter
from evalkit.errors import EvalkitError


def pool_kind(model: nn.Module) -> str:
    """``avg`` or ``max``, from the model's final pooling module."""
    pool = getattr(model, "pool", None)
    if isinstance(pool, (nn.AdaptiveMaxPool2d, nn.MaxPool2d)):
        return "max"
    if isinstance(pool, (nn.AdaptiveAvgPool2d, nn.AvgPool2d)):
        return "avg"
    raise EvalkitError(
        "model has no recognisable final pooling (model.pool); the pooling study needs an evalkit model"
    )


@torch.no_grad()
def pooled_features(
    model: nn.Module, x: torch.Tensor, *, batch_size: int = 256, device: Any = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(maps before pooling (N, C, H, W), pooled features (N, C)) read by hooks on ``model.pool``."""
    pool = getattr(model, "pool", None)
    if pool is None:
        raise EvalkitError("model has no .pool module; the pooling study needs an evalkit model")
    maps: list[torch.Tensor] = []
    pooled: list[torch.Tensor] = []

    def hook(_m: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        maps.append(inp[0].detach().cpu())
        pooled.append(torch.flatten(out.detach(), 1).cpu())

    handle = pool.register_forward_hook(hook)
    try:
        with eval_mode(model):
            for sl in batches(len(x), batch_size):
                model(x[sl].to(device))
    finally:
        handle.remove()
    return torch.cat(maps), torch.cat(pooled)


def change_stats(
    maps_nat: torch.Tensor,
    maps_adv: torch.Tensor,
    pooled_nat: torch.Tensor,
    pooled_adv: torch.Tensor,
) -> dict[str, float]:
    """Mean over examples of the pooled change, its relative size and the per-location bound."""
    d_pool = (pooled_adv - pooled_nat).norm(dim=1)
    rel = d_pool / pooled_nat.norm(dim=1).clamp_min(1e-12)
    d_map = (maps_adv - maps_nat).norm(dim=1)  # (N, H, W): per-location L2 change over channels
    bound = d_map.flatten(1).mean(1)
    return {
        "pooled_change": float(d_pool.mean()),
        "pooled_change_rel": float(rel.mean()),
        "map_change_mean_location": float(bound.mean()),
        "map_change_max_location": float(d_map.flatten(1).max(1).values.mean()),
        "pooling_ratio": float((d_pool / bound.clamp_min(1e-12)).mean()),
    }


def evaluate_entry(
    entry: ModelEntry,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int,
    step_size: float | None,
    batch_size: int,
    seed: int,
    device: Any,
    show_progress: bool,
) -> dict[str, Any]:
    """One row of the study: map size, pooling, accuracies and pooled-feature change."""
    model = entry.model
    step = step_size if step_size is not None else eps / 4
    x_adv = craft_adversarial(
        model,
        x,
        y,
        eps,
        steps=steps,
        step_size=step,
        batch_size=batch_size,
        seed=seed,
        tag=f"pooling-{entry.label}",
        device=device,
        show_progress=show_progress,
    )
    mn, pn = pooled_features(model, x, batch_size=batch_size, device=device)
    ma, pa = pooled_features(model, x_adv, batch_size=batch_size, device=device)
    kw = entry.meta.arch_kwargs if entry.meta is not None else {}
    return {
        "model": entry.label,
        "pool": pool_kind(model),
        "map_size": int(mn.shape[-1]),
        "map_hw": f"{mn.shape[-2]}x{mn.shape[-1]}",
        "strides": str(kw.get("strides", getattr(model, "default_strides", ""))),
        "upsample": int(getattr(getattr(model, "upsample", None), "factor", 1)),
        "clean_accuracy": accuracy(model, x, y, batch_size=batch_size, device=device),
        "robust_accuracy": accuracy(model, x_adv, y, batch_size=batch_size, device=device),
        **change_stats(mn, ma, pn, pa),
    }


def _trend(df: pd.DataFrame, pool: str, col: str) -> str:
    sub = df[df["pool"] == pool].sort_values("map_size")
    if sub.empty:
        return f"{pool}: no models"
    pts = ", ".join(f"{int(r.map_size)}:{getattr(r, col):.3f}" for r in sub.itertuples())
    return f"{pool} pool {col} by map size {pts}"


def run_pooling_eval(
    entries: list[ModelEntry],
    x: torch.Tensor,
    y: torch.Tensor,
    out: Any,
    *,
    eps: float,
    steps: int = 20,
    step_size: float | None = None,
    batch_size: int = 128,
    seed: int = 0,
    device: Any = "cpu",
    show_progress: bool = True,
    extra_params: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Evaluate every model, write ``pooling`` table, plot and ``analysis.json``."""
    from analysis import plots

    writer = AnalysisWriter(out, "pooling")
    rows = [
        evaluate_entry(
            e,
            x,
            y,
            eps=eps,
            steps=steps,
            step_size=step_size,
            batch_size=batch_size,
            seed=seed,
            device=device,
            show_progress=show_progress,
        )
        for e in progress(entries, "models", enabled=show_progress)
    ]
    df = pd.DataFrame(rows).sort_values(["pool", "map_size"], kind="stable").reset_index(drop=True)
    writer.table(
        df, "pooling", "per model: pooling, map size, clean/robust accuracy, pooled-feature change"
    )
    writer.figure(
        plots.pooling_plot(df),
        "pooling",
        "robust accuracy and relative pooled-feature change vs feature-map size, avg vs max pooling",
    )
    scalars = {r["model"]: {k: v for k, v in r.items() if k != "model"} for r in rows}
    finding = (
        f"{_trend(df, 'avg', 'robust_accuracy')}; {_trend(df, 'max', 'robust_accuracy')}; "
        f"{_trend(df, 'avg', 'pooled_change_rel')}; {_trend(df, 'max', 'pooled_change_rel')}"
    )
    writer.finish(
        models=[e.describe() for e in entries],
        params={
            "eps": eps,
            "attack": f"PGD-{steps}",
            "step_size": step_size if step_size else eps / 4,
            "n_examples": int(len(x)),
            "seed": seed,
            **(extra_params or {}),
        },
        scalars=scalars,
        finding=finding,
        notes=[
            "pooled_change_rel = mean over examples of ||pool(f(x'))-pool(f(x))|| / ||pool(f(x))||;",
            "map_change_mean_location = mean over locations of ||f_hw(x')-f_hw(x)|| (bounds the "
            "avg-pooled change); pooling_ratio = pooled_change / that bound",
        ],
    )
    return df


# ---------------------------------------------------------------- CPU-scale training grid


def parse_configs(text: str) -> list[tuple[str, int]]:
    """``"1222,1221@2"`` -> ``[("1222", 1), ("1221", 2)]`` (strides, upsample factor)."""
    out = []
    for tok in (t.strip() for t in text.split(",") if t.strip()):
        strides, _, up = tok.partition("@")
        if not strides.isdigit() or (up and not up.isdigit()):
            raise EvalkitError(
                f"bad config {tok!r}: write STRIDES or STRIDES@UPSAMPLE, e.g. 1221@2"
            )
        out.append((strides, int(up or 1)))
    if not out:
        raise EvalkitError("no configurations given (e.g. --configs 1222,1221,1221@2,1111)")
    return out


def train_grid(args: argparse.Namespace) -> list[ModelEntry]:
    """Train (or reuse) one checkpoint per (config, pooling) with the evalkit trainer."""
    from evalkit.checkpoint import load_model
    from evalkit.training import TrainConfig, train

    entries = []
    root = Path(args.train_dir or Path(args.out) / "models")
    for strides, up in parse_configs(args.configs):
        for pool in args.pools.split(","):
            label = f"{pool}-s{strides}" + (f"-up{up}" if up > 1 else "")
            run_dir = root / label
            ckpt = run_dir / "checkpoint.pt"
            if not (args.reuse and ckpt.exists()):
                print(f"training {label} ({args.defense}, {args.epochs} epochs)", file=sys.stderr)
                cfg = TrainConfig(
                    dataset=args.dataset,
                    arch=args.arch,
                    defense=args.defense,
                    epochs=args.epochs,
                    out=str(run_dir),
                    batch_size=args.batch_size,
                    lr=args.lr,
                    eps=args.train_eps,
                    attack_steps=args.attack_steps,
                    arch_kwargs={
                        "strides": strides,
                        "upsample": up,
                        "pool": pool,
                        "width": args.width,
                    },
                    n_train=args.n_train,
                    val_size=0,
                    seed=args.seed,
                    device=args.device,
                    progress=not args.quiet,
                )
                ckpt = train(cfg)
            model, meta = load_model(ckpt, device=_device(args.device))
            entries.append(ModelEntry(label, model, meta, {"train_dir": str(run_dir)}))
    return entries


def _device(name: str) -> torch.device:
    from evalkit.utils.device import resolve_device

    return resolve_device(name)


def build_parser() -> argparse.ArgumentParser:
    from evalkit.utils.parse import parse_eps

    p = argparse.ArgumentParser(
        prog="python -m analysis.pooling",
        description="Train a grid of models differing in feature-map size before the final pooling "
        "(stage strides and in-model upsampling) and pooling type (avg/max), then plot "
        "robust accuracy and the pooled-feature change vs map size. The defaults are a "
        "CPU-scale version (smallcnn on the bundled Fashion-MNIST, about 11 CPU-minutes).",
    )
    p.add_argument(
        "--out", required=True, help="output folder (models/, pooling.png, analysis.json)"
    )
    p.add_argument(
        "--configs",
        default="1222,1221,1221@2",
        help="STRIDES[@UPSAMPLE] list; smallcnn on 28x28: 1222->4x4, 1221->7x7, 1221@2->14x14, "
        "1111->28x28 (default: the first three; 1111 costs several times more)",
    )
    p.add_argument("--pools", default="avg,max", help="pooling types (default avg,max)")
    p.add_argument("--arch", default="smallcnn")
    p.add_argument("--dataset", default="fashion-mnist-mini")
    p.add_argument("--width", type=int, default=8, help="smallcnn base width (default 8 for CPU)")
    p.add_argument("--defense", default="at", help="training SPEC (default at: PGD-AT)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument(
        "--train-eps",
        type=parse_eps,
        default=parse_eps("8/255"),
        help="training eps (default 8/255)",
    )
    p.add_argument(
        "--attack-steps", type=int, default=3, help="PGD steps in training (default 3, step eps/4)"
    )
    p.add_argument(
        "--eps", type=parse_eps, default=parse_eps("8/255"), help="evaluation eps (default 8/255)"
    )
    p.add_argument(
        "--steps", type=int, default=10, help="evaluation PGD steps (default 10, step eps/4)"
    )
    p.add_argument("--n", type=int, default=500, help="test examples to evaluate (default 500)")
    p.add_argument(
        "--train-dir", default=None, help="where the grid's checkpoints go (default OUT/models)"
    )
    p.add_argument(
        "--no-reuse",
        dest="reuse",
        action="store_false",
        help="retrain even when a checkpoint for a configuration exists",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    """Train the grid and run the study; prints the finding."""
    from evalkit.data import load_split
    from evalkit.utils.seeding import seed_everything

    args = build_parser().parse_args(argv)
    try:
        seed_everything(args.seed)
        entries = train_grid(args)
        test = load_split(args.dataset, "test").first(args.n)
        x, y = test.float_batch(slice(None)), test.y
        df = run_pooling_eval(
            entries,
            x,
            y,
            args.out,
            eps=args.eps,
            steps=args.steps,
            seed=args.seed,
            device=_device(args.device),
            show_progress=not args.quiet,
            extra_params={
                "train": {k: v for k, v in vars(args).items() if k != "out"},
                "data": args.dataset,
            },
        )
    except EvalkitError as exc:
        print(f"analysis.pooling: error: {exc}", file=sys.stderr)
        return 2
    cols = [
        "model",
        "pool",
        "map_size",
        "clean_accuracy",
        "robust_accuracy",
        "pooled_change_rel",
        "pooling_ratio",
    ]
    print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {Path(args.out) / 'analysis.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "change_stats",
    "evaluate_entry",
    "main",
    "pool_kind",
    "pooled_features",
    "run_pooling_eval",
]
