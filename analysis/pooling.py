"""Feature-map size and pooling study (RCM, arXiv 2202.12435).

RCM's claim: a larger feature map before *average* pooling resists perturbations better, while
max pooling does not benefit. The argument is per example: global average pooling divides a
perturbation of the map by the number of locations it does not cover, so
``||GAP(f(x')) - GAP(f(x))|| <= mean_hw ||f_hw(x') - f_hw(x)||`` and the left side shrinks as
the map grows unless the change is spatially uniform; a max pool passes the largest local change
straight through.

This module measures, per model: the map size before pooling, clean and PGD accuracy, the
pooled-feature change ``||pool(f(x')) - pool(f(x))||`` (absolute and relative to
``||pool(f(x))||``) and the bound's right side. The grid of models it compares (stage strides
and in-model upsampling for the map size, avg and max pooling) is trained by
:func:`evalkit.pipelines.pooling.train_pooling_grid` and run by ``evalkit study pooling``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from analysis.common import ModelEntry, batches, craft_adversarial, eval_mode, predict, progress
from analysis.io import AnalysisWriter
from analysis.naming import file_slug
from analysis.options import pgd_options, run_options
from evalkit.analyses import AnalysisInputs, register_analysis, single_eps
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


def receptive_field(model: nn.Module, x: torch.Tensor) -> int:
    """Measured receptive field of the final map in input pixels: the height of the region of
    ``x`` (one image, ``(C, H, W)``) on which the centre location of the map before pooling
    depends (nonzero input gradient, summed over channels). In-model upsampling shrinks it
    relative to the image; the map size alone does not show that."""
    pool = getattr(model, "pool", None)
    if pool is None:
        raise EvalkitError("model has no .pool module; the pooling study needs an evalkit model")
    seen: list[torch.Tensor] = []
    handle = pool.register_forward_hook(lambda _m, inp, _o: seen.append(inp[0]))
    probe = x[None].detach().clone().requires_grad_(True)
    try:
        with eval_mode(model), torch.enable_grad():
            model(probe)
            fmap = seen[-1]
            fmap[0, :, fmap.shape[-2] // 2, fmap.shape[-1] // 2].sum().backward()
    finally:
        handle.remove()
    rows = probe.grad[0].abs().sum(dim=(0, 2)) > 0  # (H,): rows the centre unit depends on
    where = torch.nonzero(rows).flatten()
    return int(where.max() - where.min() + 1) if len(where) else 0


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
    points: dict[str, dict[str, np.ndarray]] | None = None,
) -> dict[str, Any]:
    """One row of the study: map size, pooling, accuracies and pooled-feature change. With
    ``points`` given, ``points[label]`` gets the per-example arrays ``index``, ``clean``,
    ``robust`` (0/1) and ``change_rel`` (relative pooled-feature change)."""
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
    clean = predict(model, x, batch_size=batch_size, device=device) == y
    robust = predict(model, x_adv, batch_size=batch_size, device=device) == y
    if points is not None:
        rel = (pa - pn).norm(dim=1) / pn.norm(dim=1).clamp_min(1e-12)
        points[entry.label] = {
            "index": np.arange(len(y)),
            "clean": clean.numpy().astype(np.int8),
            "robust": robust.numpy().astype(np.int8),
            "change_rel": rel.numpy(),
        }
    return {
        "model": entry.label,
        "pool": pool_kind(model),
        "map_size": int(mn.shape[-1]),
        "map_hw": f"{mn.shape[-2]}x{mn.shape[-1]}",
        "strides": str(kw.get("strides", getattr(model, "default_strides", ""))),
        "upsample": int(getattr(getattr(model, "upsample", None), "factor", 1)),
        "receptive_field": receptive_field(model, x[0].to(device)) if len(x) else 0,
        "input_size": int(x.shape[-1]),
        "clean_accuracy": float(clean.float().mean()) if len(y) else float("nan"),
        "robust_accuracy": float(robust.float().mean()) if len(y) else float("nan"),
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
    points: dict[str, dict[str, np.ndarray]] = {}
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
            points=points,
        )
        for e in progress(entries, "models", enabled=show_progress)
    ]
    for label, arrays in points.items():
        writer.array(
            f"points_{file_slug(label)}",
            "per test example: index, clean and robust correctness (0/1), relative "
            "pooled-feature change",
            **arrays,
        )
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


@register_analysis(
    "pooling",
    description="robust accuracy and pooled-feature change vs feature-map size, avg vs max pool",
)
def pooling(
    inputs: AnalysisInputs,
    *,
    steps: int = 20,
    step_size: float | str | None = None,
) -> pd.DataFrame:
    """Map size, pooling type, clean/PGD-``steps`` accuracy (step eps/4 by default) and the
    pooled-feature change of each model; models that differ in strides/upsample/pool are
    trained by the pipelines (:func:`evalkit.pipelines.pooling.train_pooling_grid`)."""
    return run_pooling_eval(
        inputs.models,
        inputs.x,
        inputs.y,
        inputs.out,
        eps=single_eps(inputs.eps),
        **pgd_options(steps, step_size, None),
        **run_options(inputs),
    )


__all__ = [
    "receptive_field",
    "change_stats",
    "evaluate_entry",
    "pool_kind",
    "pooled_features",
    "pooling",
    "run_pooling_eval",
]
