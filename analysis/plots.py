"""Figures of the studies (matplotlib, Agg backend: no display needed).

Each function takes the study's table and returns a Figure; :class:`analysis.io.AnalysisWriter`
saves it as PNG and SVG. Natural data are drawn in blue, adversarial in red throughout.
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

NAT, ADV = "#1f77b4", "#d62728"


def _bars(ax: Any, values: np.ndarray, color: str, alpha: float, label: str) -> None:
    """Adjacent bars drawn as one filled step artist (hundreds of Rectangles render slowly)."""
    values = np.asarray(values, dtype=float)
    ax.stairs(
        values, np.arange(len(values) + 1) - 0.5, fill=True, color=color, alpha=alpha, label=label
    )


def _sorted_pair(sub: pd.DataFrame, col: str, sort: str) -> tuple[np.ndarray, np.ndarray, str]:
    nat = sub[f"{col}_natural"].to_numpy()
    adv = sub[f"{col}_adversarial"].to_numpy()
    if sort == "natural":
        order = np.argsort(-nat, kind="stable")
        return nat[order], adv[order], "channels sorted by natural magnitude"
    return np.sort(nat)[::-1], np.sort(adv)[::-1], "channels, each curve sorted independently"


def _magnitude_axes(ax: Any, sub: pd.DataFrame, col: str, sort: str, title: str) -> None:
    nat, adv, xlabel = _sorted_pair(sub, col, sort)
    _bars(ax, nat, NAT, 0.6, "natural")
    _bars(ax, adv, ADV, 0.45, "adversarial")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("magnitude of activation")
    ax.set_title(title)
    ax.legend(fontsize=8)


def _frequency_axes(ax: Any, sub: pd.DataFrame, n_examples: int, title: str) -> None:
    order = np.argsort(-sub["count_natural"].to_numpy(), kind="stable")
    nat = sub["count_natural"].to_numpy()[order]
    adv = sub["count_adversarial"].to_numpy()[order]
    _bars(ax, nat, NAT, 0.6, "natural")
    _bars(ax, adv, ADV, 0.45, "adversarial")
    ax.set_ylim(0, max(1, n_examples))
    ax.set_xlabel("channels sorted by natural activation count")
    ax.set_ylabel("number of activations")
    ax.set_title(title)
    ax.legend(fontsize=8)


def magnitude_plot(
    sub: pd.DataFrame, col: str = "magnitude", *, sort: str = "independent", title: str = ""
) -> Figure:
    """Per-channel magnitude, natural vs adversarial (CAS Figure 1)."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    _magnitude_axes(ax, sub, col, sort, title)
    return fig


def frequency_plot(sub: pd.DataFrame, *, n_examples: int, title: str = "") -> Figure:
    """Per-channel activation counts sorted by the natural count (CAS Figure 2, uniformity)."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    _frequency_axes(ax, sub, n_examples, title)
    return fig


def channel_comparison(df: pd.DataFrame, col: str, *, sort: str, n_examples: int) -> Figure:
    """One column per model: magnitude (top) and frequency (bottom), shared y per row."""
    models = list(dict.fromkeys(df["model"]))
    fig, axes = plt.subplots(
        2, len(models), figsize=(3.6 * len(models), 6), squeeze=False, sharey="row"
    )
    for j, m in enumerate(models):
        sub = df[df.model == m]
        _magnitude_axes(axes[0, j], sub, col, sort, m)
        _frequency_axes(axes[1, j], sub, n_examples, m)
    fig.tight_layout()
    return fig


def channel_scalars(scalars: dict[str, dict[str, Any]]) -> Figure:
    """Bars per model: mean magnitude (left) and normalised entropy of the frequency (right)."""
    labels = list(scalars)
    idx = np.arange(len(labels))
    fig, axes = plt.subplots(1, 2, figsize=(max(6, 2.2 * len(labels) + 2), 3.2))
    for ax, key, ylabel in (
        (axes[0], "mean_magnitude", "mean channel magnitude"),
        (axes[1], "entropy", "normalised entropy of activation counts"),
    ):
        nat = [scalars[m][f"{key}_natural"] for m in labels]
        adv = [scalars[m][f"{key}_adversarial"] for m in labels]
        ax.bar(idx - 0.2, nat, 0.4, color=NAT, label="natural")
        ax.bar(idx + 0.2, adv, 0.4, color=ADV, label="adversarial")
        ax.set_xticks(idx, labels, rotation=20, ha="right")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def importance_hist(
    values: dict[str, tuple[np.ndarray, np.ndarray]], n_channels: dict[str, int]
) -> Figure:
    """Histogram of mask values per CIFS module (natural vs adversarial), one panel per module."""
    names = list(values)
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        nat, adv = values[name]
        hi = float(max(nat.max(initial=0), adv.max(initial=0))) or 1.0
        bins = np.linspace(0, hi, 40)
        ax.hist(nat.ravel(), bins=bins, color=NAT, alpha=0.6, label="natural", log=True)
        ax.hist(adv.ravel(), bins=bins, color=ADV, alpha=0.45, label="adversarial", log=True)
        ax.axvline(1.0 / max(1, n_channels[name]), color="k", ls="--", lw=0.8, label="uniform 1/C")
        ax.set_xlabel("channel importance (mask value)")
        ax.set_ylabel("count (log)")
        ax.set_title(name)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def importance_channels(df: pd.DataFrame) -> Figure:
    """Mean mask per channel, sorted by the natural mean, natural vs adversarial, per module."""
    mods = list(dict.fromkeys(df["module"]))
    fig, axes = plt.subplots(1, len(mods), figsize=(4 * len(mods), 3.2), squeeze=False)
    for ax, m in zip(axes[0], mods):
        sub = df[df.module == m]
        order = np.argsort(-sub["mean_natural"].to_numpy(), kind="stable")
        _bars(ax, sub["mean_natural"].to_numpy()[order], NAT, 0.6, "natural")
        _bars(ax, sub["mean_adversarial"].to_numpy()[order], ADV, 0.45, "adversarial")
        ax.set_xlabel("channels sorted by natural mean importance")
        ax.set_ylabel("mean importance")
        ax.set_title(m)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def pooling_plot(df: pd.DataFrame) -> Figure:
    """Robust accuracy (left) and pooled-feature change (right) vs feature-map size, per pooling."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for pool, marker, color in (("avg", "o", NAT), ("max", "s", "#ff7f0e")):
        sub = df[df["pool"] == pool].sort_values("map_size")
        if sub.empty:
            continue
        axes[0].plot(
            sub["map_size"],
            sub["robust_accuracy"],
            marker=marker,
            color=color,
            label=f"{pool} pool, robust",
        )
        axes[0].plot(
            sub["map_size"],
            sub["clean_accuracy"],
            marker=marker,
            color=color,
            ls=":",
            alpha=0.6,
            label=f"{pool} pool, clean",
        )
        axes[1].plot(
            sub["map_size"],
            sub["pooled_change_rel"],
            marker=marker,
            color=color,
            label=f"{pool} pool",
        )
    axes[0].set_ylabel("accuracy")
    axes[0].set_title("accuracy vs feature-map size")
    axes[1].set_ylabel("||pool(f(x')) - pool(f(x))|| / ||pool(f(x))||")
    axes[1].set_title("change of the pooled feature under attack")
    sizes = sorted(df["map_size"].unique())
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [f"{s}x{s}" for s in sizes])
        ax.minorticks_off()
        ax.set_xlabel("feature-map size before pooling")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def sap_plot(df: pd.DataFrame) -> Figure:
    """Robust accuracy vs EOT samples (left, one line per eps) and vs eps (right)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (eps_label, sub) in enumerate(df.groupby("eps_label", sort=False)):
        for model, ls, marker in (("sap", "-", "o"), ("dense", "--", "s")):
            s = sub[sub.model == model].sort_values("eot")
            if not s.empty:
                axes[0].plot(
                    s["eot"],
                    s["robust_accuracy"],
                    ls=ls,
                    marker=marker,
                    color=colors[i % len(colors)],
                    label=f"{model}, eps {eps_label}",
                )
    axes[0].set_xscale("log")
    eot_ticks = sorted(int(v) for v in df["eot"].unique())
    axes[0].set_xticks(eot_ticks, [str(v) for v in eot_ticks])
    axes[0].minorticks_off()
    axes[0].set_xlabel("EOT samples per gradient")
    axes[0].set_ylabel("robust accuracy")
    axes[0].set_title("SAP under EOT")
    eots = sorted(df["eot"].unique())
    for n in sorted({eots[0], eots[-1]}):
        s = df[(df.model == "sap") & (df.eot == n)].sort_values("eps")
        axes[1].plot(s["eps"], s["robust_accuracy"], marker="o", label=f"sap, EOT {n}")
    d = df[(df.model == "dense") & (df.eot == eots[0])].sort_values("eps")
    axes[1].plot(d["eps"], d["robust_accuracy"], marker="s", ls="--", color="k", label="dense")
    axes[1].set_xlabel("eps (Linf)")
    axes[1].set_ylabel("robust accuracy")
    axes[1].set_title("accuracy vs eps")
    for ax in axes:
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
