"""Channel activation magnitude and uniformity (CAS, Bai et al. 2021, Figures 1-2).

For natural test images and their PGD versions, take each channel's spatial-mean activation
``f[i, c]`` at one layer (default: the penultimate block, before any CAS/CIFS mask). Channel c
is *activated* for image i when ``f[i, c] > threshold * max_c f[i, c]`` (threshold 1e-2).

* frequency ``count[c]`` = number of images where c is activated (Figure 2, "uniformity");
* magnitude, three ways: ``mean`` (the true mean of f over all images, default), ``activated``
  (sum over all images / activated count, the paper's per-batch formula over the whole set) and
  ``paper_running`` (the paper code's ``(mag + new) / 2`` running average over batches, biased
  toward later batches; kept only to compare with the published figure).

The uniformity of the frequency distribution is summarised by its normalised entropy (1 = every
channel equally often active) and its Gini coefficient (0 = uniform), so the finding is a number.
Both saturate when most channels are active on most images (the entropy was 0.990 for natural and
adversarial counts of a CIFAR-10 ResNet-18 whose Figure 2 shows the effect), so beside them:
``tail_share`` (share of the adversarial activations on the natural ranking's tail half of the
channels, minus the natural share), its cross-fitted version (ranking and shares from different
images, unbiased under no effect) and ``spearman_counts`` (rank agreement of the two counts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from analysis.common import ModelEntry, accuracy, batches, craft_adversarial, eval_mode, progress
from analysis.hooks import capture, default_layer, get_layer, spatial_mean
from analysis.io import AnalysisWriter
from analysis.naming import file_slug

MAGNITUDES = ("mean", "activated", "paper_running")


def activated(f: torch.Tensor, threshold: float = 0.01) -> torch.Tensor:
    """Boolean (N, C): ``f[i, c] > threshold * max_c f[i, c]`` (a per-image relative threshold)."""
    return f > threshold * f.max(dim=1, keepdim=True).values


def activation_counts(f: torch.Tensor, threshold: float = 0.01) -> torch.Tensor:
    """Per channel, the number of images in which it is activated (int64, shape (C,))."""
    return activated(f, threshold).sum(0)


def magnitude_mean(f: torch.Tensor) -> torch.Tensor:
    """The true mean spatial-mean activation per channel over all images."""
    return f.mean(0)


def magnitude_activated(f: torch.Tensor, threshold: float = 0.01) -> torch.Tensor:
    """Sum over all images divided by the activated count (0 where never activated)."""
    counts = activation_counts(f, threshold).to(f.dtype)
    total = f.sum(0)
    return torch.where(counts > 0, total / counts.clamp_min(1), torch.zeros_like(total))


def magnitude_paper_running(
    f: torch.Tensor, threshold: float = 0.01, batch_size: int = 100
) -> torch.Tensor:
    """The published code's estimate: per batch ``sum/count``, combined as ``(mag + new) / 2``."""
    mag: torch.Tensor | None = None
    for sl in batches(len(f), batch_size):
        new = magnitude_activated(f[sl], threshold)
        mag = new if mag is None else (mag + new) / 2
    return mag if mag is not None else torch.zeros(f.shape[1])


def normalized_entropy(counts: np.ndarray | torch.Tensor) -> float:
    """Entropy of ``counts / sum`` divided by log(C): 1 for a perfectly uniform distribution."""
    c = np.asarray(counts, dtype=float)
    if c.sum() <= 0 or len(c) < 2:
        return float("nan")
    p = c[c > 0] / c.sum()
    return float(-(p * np.log(p)).sum() / np.log(len(c)))


def gini(counts: np.ndarray | torch.Tensor) -> float:
    """Gini coefficient of non-negative values: 0 when all equal, near 1 when one dominates."""
    c = np.sort(np.asarray(counts, dtype=float))
    n = len(c)
    if n == 0 or c.sum() <= 0:
        return float("nan")
    ranks = np.arange(1, n + 1)
    return float((2 * (ranks * c).sum()) / (n * c.sum()) - (n + 1) / n)


def tail_channels(nat_counts: np.ndarray | torch.Tensor, frac: float = 0.5) -> np.ndarray:
    """Boolean mask (C,) of the natural ranking's tail: the ``round(frac * C)`` channels (at
    least 1, at most C - 1) with the lowest natural counts; ties keep channel order (the sort is
    stable on the descending counts, so among equal counts the later channels are in the tail)."""
    c = np.asarray(nat_counts, dtype=float)
    if c.ndim != 1 or len(c) < 2:
        raise ValueError(f"need a 1-d count vector of at least 2 channels, got shape {c.shape}")
    if not 0 < frac < 1:
        raise ValueError(f"frac must be in (0, 1), not {frac}")
    t = min(len(c) - 1, max(1, int(round(frac * len(c)))))
    order = np.argsort(-c, kind="stable")
    mask = np.zeros(len(c), dtype=bool)
    mask[order[len(c) - t :]] = True
    return mask


def tail_share(
    nat_counts: np.ndarray | torch.Tensor,
    adv_counts: np.ndarray | torch.Tensor,
    frac: float = 0.5,
) -> float:
    """Share of the adversarial activations that fall on the natural ranking's tail channels,
    minus the natural share on the same channels (CAS Figure 2 as one number).

    ``nat_counts``, ``adv_counts``: (C,) activation counts. 0 when the adversarial activations
    follow the natural distribution; > 0 when they spread onto channels natural images rarely
    use (the paper's "more uniform"); at most ``1 - natural share``. The entropy of the counts can
    stay at ~0.99 for both while this is clearly positive. NaN when either total is 0.
    Uses the same counts for the ranking and the shares; on sampled data that favours a positive
    value (the tail is partly chosen by noise), which :func:`tail_share_crossfit` avoids.
    """
    nat, adv = np.asarray(nat_counts, dtype=float), np.asarray(adv_counts, dtype=float)
    if nat.shape != adv.shape:
        raise ValueError(f"count vectors differ in shape: {nat.shape} vs {adv.shape}")
    if nat.sum() <= 0 or adv.sum() <= 0:
        return float("nan")
    mask = tail_channels(nat, frac)
    return float(adv[mask].sum() / adv.sum() - nat[mask].sum() / nat.sum())


def tail_share_crossfit(
    active_nat: np.ndarray | torch.Tensor,
    active_adv: np.ndarray | torch.Tensor,
    *,
    frac: float = 0.5,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`tail_share` with the ranking and the shares taken on different images.

    ``active_nat``, ``active_adv``: (N, C) 0/1 activation indicators of the same N images
    (natural and adversarial, see :func:`activated`). The images are split by position (even /
    odd rows); the tail is ranked on one half's natural counts and the shares are measured on the
    other half, both ways, and the two values averaged, so noise in the ranking cannot make the
    value positive: it is ~0 in expectation when natural and adversarial activations have the
    same distribution.

    ``weights``: (m, N) bootstrap multiplicities (default one row of ones); returns (m,) values.
    """
    an = np.asarray(active_nat, dtype=float)
    aa = np.asarray(active_adv, dtype=float)
    if an.ndim != 2 or an.shape != aa.shape:
        raise ValueError(f"need two (N, C) arrays of the same shape, got {an.shape}, {aa.shape}")
    n, c = an.shape
    if n < 2 or c < 2:
        raise ValueError(f"need at least 2 images and 2 channels, got {an.shape}")
    if not 0 < frac < 1:
        raise ValueError(f"frac must be in (0, 1), not {frac}")
    w = np.ones((1, n)) if weights is None else np.asarray(weights, dtype=float)
    even = (np.arange(n) % 2 == 0).astype(float)
    t = min(c - 1, max(1, int(round(frac * c))))

    def tail_mask(counts: np.ndarray) -> np.ndarray:
        order = np.argsort(-counts, axis=1, kind="stable")
        mask = np.zeros(counts.shape, dtype=bool)
        np.put_along_axis(mask, order[:, c - t :], True, axis=1)
        return mask

    def share(counts: np.ndarray, mask: np.ndarray) -> np.ndarray:
        total = counts.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, (counts * mask).sum(1) / total, np.nan)

    out = []
    for rank_half, measure_half in ((even, 1 - even), (1 - even, even)):
        wr, wm = w * rank_half, w * measure_half
        mask = tail_mask(wr @ an)
        out.append(share(wm @ aa, mask) - share(wm @ an, mask))
    return (out[0] + out[1]) / 2


def spearman(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either side is constant.

    Between natural and adversarial counts it says whether the adversarial activations keep the
    natural ranking of the channels (1 = same order). It does not see a flattening that keeps the
    order, which :func:`tail_share` does."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"need two 1-d arrays of the same length, got {x.shape}, {y.shape}")
    rx, ry = _average_ranks(x), _average_ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return (sums / counts)[inverse]


@dataclass
class ChannelResult:
    """Per-model outcome: the raw (N, C) spatial means and derived per-channel statistics."""

    label: str
    layer: str
    f_nat: torch.Tensor
    f_adv: torch.Tensor
    clean_acc: float
    adv_acc: float

    def table(self, threshold: float, batch_size: int) -> pd.DataFrame:
        cn, ca = activation_counts(self.f_nat, threshold), activation_counts(self.f_adv, threshold)
        order = torch.argsort(-cn.float(), stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(order))
        return pd.DataFrame(
            {
                "model": self.label,
                "layer": self.layer,
                "channel": np.arange(self.f_nat.shape[1]),
                "rank_natural_count": rank.numpy(),
                "count_natural": cn.numpy(),
                "count_adversarial": ca.numpy(),
                "magnitude_natural": magnitude_mean(self.f_nat).numpy(),
                "magnitude_adversarial": magnitude_mean(self.f_adv).numpy(),
                "magnitude_activated_natural": magnitude_activated(self.f_nat, threshold).numpy(),
                "magnitude_activated_adversarial": magnitude_activated(
                    self.f_adv, threshold
                ).numpy(),
                "magnitude_paper_running_natural": magnitude_paper_running(
                    self.f_nat, threshold, batch_size
                ).numpy(),
                "magnitude_paper_running_adversarial": magnitude_paper_running(
                    self.f_adv, threshold, batch_size
                ).numpy(),
            }
        )

    def scalars(self, threshold: float) -> dict[str, Any]:
        cn, ca = activation_counts(self.f_nat, threshold), activation_counts(self.f_adv, threshold)
        n = max(1, len(self.f_nat))
        mn, ma = float(self.f_nat.mean()), float(self.f_adv.mean())
        return {
            "layer": self.layer,
            "n_examples": int(len(self.f_nat)),
            "n_channels": int(self.f_nat.shape[1]),
            "clean_accuracy": self.clean_acc,
            "adversarial_accuracy": self.adv_acc,
            "mean_magnitude_natural": mn,
            "mean_magnitude_adversarial": ma,
            "magnitude_ratio_adv_over_nat": ma / mn if mn > 0 else float("nan"),
            "mean_active_fraction_natural": float(cn.sum()) / (n * len(cn)),
            "mean_active_fraction_adversarial": float(ca.sum()) / (n * len(ca)),
            "entropy_natural": normalized_entropy(cn.numpy()),
            "entropy_adversarial": normalized_entropy(ca.numpy()),
            "gini_natural": gini(cn.numpy()),
            "gini_adversarial": gini(ca.numpy()),
            "tail_share": tail_share(cn.numpy(), ca.numpy()),
            "tail_share_crossfit": _crossfit_or_nan(
                activated(self.f_nat, threshold), activated(self.f_adv, threshold)
            ),
            "spearman_counts": spearman(cn.numpy(), ca.numpy()),
        }


def _crossfit_or_nan(active_nat: torch.Tensor, active_adv: torch.Tensor) -> float:
    if active_nat.shape[0] < 2 or active_nat.shape[1] < 2:
        return float("nan")
    return float(tail_share_crossfit(active_nat.numpy(), active_adv.numpy())[0])


@torch.no_grad()
def spatial_means(
    model: nn.Module, x: torch.Tensor, layer: str, *, batch_size: int = 256, device: Any = "cpu"
) -> torch.Tensor:
    """(N, C) spatial-mean activations of ``layer`` for images ``x`` (eval mode)."""
    get_layer(model, layer)
    out = []
    with eval_mode(model), capture(model, layer, reduce="spatial_mean") as store:
        for sl in batches(len(x), batch_size):
            store.clear()
            model(x[sl].to(device))
            out.append(store[-1])
    return torch.cat(out) if out else torch.zeros(0, 0)


def analyze_model(
    entry: ModelEntry,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    layer: str | None = None,
    steps: int = 20,
    step_size: float = 0.003,
    batch_size: int = 128,
    seed: int = 0,
    device: Any = "cpu",
    show_progress: bool = True,
) -> ChannelResult:
    """Spatial means on natural and PGD images for one model."""
    model = entry.model
    name = layer or default_layer(model)
    get_layer(model, name)  # fail on a bad --layer before spending time on the attack
    x_adv = craft_adversarial(
        model,
        x,
        y,
        eps,
        steps=steps,
        step_size=step_size,
        batch_size=batch_size,
        seed=seed,
        tag=f"channels-{entry.label}",
        device=device,
        show_progress=show_progress,
    )
    f_nat = spatial_means(model, x, name, batch_size=batch_size, device=device)
    f_adv = spatial_means(model, x_adv, name, batch_size=batch_size, device=device)
    return ChannelResult(
        label=entry.label,
        layer=name,
        f_nat=f_nat,
        f_adv=f_adv,
        clean_acc=accuracy(model, x, y, batch_size=batch_size, device=device),
        adv_acc=accuracy(model, x_adv, y, batch_size=batch_size, device=device),
    )


def finding_line(scalars: dict[str, dict[str, Any]]) -> str:
    """One sentence comparing adversarial and natural mean magnitude per model."""
    parts = []
    for label, s in scalars.items():
        parts.append(
            f"{label}: magnitude adv/nat {s['mean_magnitude_adversarial']:.3g}/{s['mean_magnitude_natural']:.3g}"
            f" (x{s['magnitude_ratio_adv_over_nat']:.2f}), entropy adv/nat "
            f"{s['entropy_adversarial']:.3f}/{s['entropy_natural']:.3f}"
        )
    return "; ".join(parts)


def run_channel_study(
    entries: list[ModelEntry],
    x: torch.Tensor,
    y: torch.Tensor,
    out: Any,
    *,
    eps: float,
    layer: str | None = None,
    class_k: int | None = None,
    threshold: float = 0.01,
    sort: str = "independent",
    magnitude: str = "mean",
    steps: int = 20,
    step_size: float = 0.003,
    batch_size: int = 128,
    seed: int = 0,
    device: Any = "cpu",
    show_progress: bool = True,
    extra_params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the study on every model, write tables/figures/``analysis.json``; return the scalars."""
    from analysis import plots

    if magnitude not in MAGNITUDES:
        raise ValueError(f"magnitude must be one of {MAGNITUDES}")
    writer = AnalysisWriter(out, "channels")
    results: list[ChannelResult] = []
    tables = []
    for entry in progress(entries, "models", enabled=show_progress and len(entries) > 1):
        res = analyze_model(
            entry,
            x,
            y,
            eps=eps,
            layer=layer,
            steps=steps,
            step_size=step_size,
            batch_size=batch_size,
            seed=seed,
            device=device,
            show_progress=show_progress,
        )
        results.append(res)
        tables.append(res.table(threshold, batch_size))
        writer.array(
            f"features_{file_slug(entry.label)}",
            "per-example spatial means (N, C) at the layer",
            natural=res.f_nat.numpy(),
            adversarial=res.f_adv.numpy(),
            labels=y.numpy(),
        )
    df = pd.concat(tables, ignore_index=True)
    writer.table(
        df,
        "channels",
        "per model and channel: activation counts and magnitudes, natural vs adversarial",
    )
    scalars = {r.label: r.scalars(threshold) for r in results}
    writer.table(
        pd.DataFrame([{"model": k, **v} for k, v in scalars.items()]),
        "summary",
        "per model scalar findings (mean magnitude, uniformity entropy and Gini, accuracy)",
    )
    col = {
        "mean": "magnitude",
        "activated": "magnitude_activated",
        "paper_running": "magnitude_paper_running",
    }[magnitude]
    single = len(results) == 1  # with several models the comparison figure shows them all
    for r in results:
        sub = df[df.model == r.label]
        slug = file_slug(r.label)
        writer.figure(
            plots.magnitude_plot(sub, col, sort=sort, title=r.label),
            f"magnitude_{slug}",
            f"{r.label}: per-channel {magnitude} magnitude, natural vs adversarial ({sort} sort)",
            in_report=single,
        )
        writer.figure(
            plots.frequency_plot(sub, n_examples=len(r.f_nat), title=r.label),
            f"frequency_{slug}",
            f"{r.label}: activation count per channel, sorted by the natural count",
            in_report=single,
        )
    if len(results) > 1:
        writer.figure(
            plots.channel_comparison(df, col, sort=sort, n_examples=len(x)),
            "comparison",
            "all models: magnitude and activation frequency, natural vs adversarial",
        )
    writer.figure(
        plots.channel_scalars(scalars),
        "scalars",
        "mean magnitude and Gini coefficient of the activation counts (0 = uniform), per model; "
        "tail share when recorded",
    )
    params = {
        "eps": eps,
        "attack": f"PGD-{steps}",
        "step_size": step_size,
        "random_start": True,
        "class": class_k,
        "threshold": threshold,
        "sort": sort,
        "magnitude": magnitude,
        "layer": {r.label: r.layer for r in results},
        "n_examples": int(len(x)),
        "seed": seed,
        "loss": {e.label: ("joint_ce" if _has_aux(e.model) else "ce") for e in entries},
        **(extra_params or {}),
    }
    writer.finish(
        models=[e.describe() for e in entries],
        params=params,
        scalars=scalars,
        finding=finding_line(scalars),
        notes=[
            "magnitude 'mean' is the true mean over all images; the paper code's running "
            "average is in the column magnitude_paper_running_*"
        ],
    )
    return scalars


def _has_aux(model: nn.Module) -> bool:
    from evalkit.defenses.context import has_aux_heads

    return has_aux_heads(model)


__all__ = [
    "ChannelResult",
    "activated",
    "activation_counts",
    "analyze_model",
    "gini",
    "magnitude_activated",
    "magnitude_mean",
    "magnitude_paper_running",
    "normalized_entropy",
    "run_channel_study",
    "spatial_mean",
    "spatial_means",
    "spearman",
    "tail_channels",
    "tail_share",
    "tail_share_crossfit",
]
