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
#: widest figure (inches) that a printed A4 report shows at full size: fonts chosen here are the
#: fonts a reader sees (wider figures would be scaled down with their labels)
MAX_WIDTH = 7.2
#: tallest figure (inches, legend excluded) that fits a printed page under its caption
MAX_HEIGHT = 8.6
#: a channel-frequency panel is saturated (flat at the maximum, nothing to see) when the median
#: channel is active on at least this share of the images, natural and adversarial alike
SATURATED = 0.95
STYLE = {"font.size": 8, "axes.titlesize": 9, "legend.fontsize": 8}


def styled(fn: Any) -> Any:
    """Build the figure under :data:`STYLE` (8 pt text at the figure's printed size) without
    touching pyplot's global settings."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with plt.rc_context(STYLE):
            return fn(*args, **kwargs)

    return wrapper


def legend_on_top(fig: Figure, axes: Any, ncol: int = 3) -> None:
    """One legend for the whole figure, above the panels (outside the data); the panels' own
    legends are removed."""
    handles, labels = [], []
    for ax in np.ravel(axes):
        h, lab = ax.get_legend_handles_labels()
        for hi, li in zip(h, lab):
            if li not in labels and not li.startswith("_"):
                handles.append(hi)
                labels.append(li)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    if handles:
        fig.legend(
            handles,
            labels,
            loc="lower center",
            bbox_to_anchor=(0.5, 1.0),
            ncol=min(ncol, len(labels)),
            frameon=False,
        )


def frequency_saturated(sub: pd.DataFrame, n_examples: int) -> bool:
    """Whether the median channel is active on at least :data:`SATURATED` of the images, for
    natural and adversarial inputs: the count plot is then flat at the maximum."""
    if n_examples <= 0 or sub.empty:
        return False
    return all(
        float(np.median(sub[k].to_numpy())) >= SATURATED * n_examples
        for k in ("count_natural", "count_adversarial")
    )


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
        return nat[order], adv[order], "channel rank (natural magnitude)"
    return np.sort(nat)[::-1], np.sort(adv)[::-1], "channel rank (each curve sorted)"


def _magnitude_axes(ax: Any, sub: pd.DataFrame, col: str, sort: str, title: str) -> None:
    nat, adv, xlabel = _sorted_pair(sub, col, sort)
    _bars(ax, nat, NAT, 0.6, "natural")
    _bars(ax, adv, ADV, 0.45, "adversarial")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("magnitude of activation")
    ax.set_title(title)


def _frequency_axes(ax: Any, sub: pd.DataFrame, n_examples: int, title: str) -> None:
    """Activation count per channel (sorted by the natural count); a saturated panel
    (:func:`frequency_saturated`) states its numbers instead of drawing a flat bar."""
    order = np.argsort(-sub["count_natural"].to_numpy(), kind="stable")
    nat = sub["count_natural"].to_numpy()[order]
    adv = sub["count_adversarial"].to_numpy()[order]
    ax.set_title(title)
    if frequency_saturated(sub, n_examples):
        ax.set_axis_off()
        ax.text(
            0.5,
            0.5,
            f"flat at the maximum:\nmedian channel active on\n{np.median(nat):.0f} (nat.) / "
            f"{np.median(adv):.0f} (adv.) of {n_examples}\nimages; least active\n"
            f"{nat.min():.0f} / {adv.min():.0f}\n(entropy, Gini: table)",
            ha="center",
            va="center",
            fontsize=7.5,
            transform=ax.transAxes,
            bbox={"boxstyle": "round", "fc": "#f4f6f9", "ec": "#c9ced6"},
        )
        return
    _bars(ax, nat, NAT, 0.6, "natural")
    _bars(ax, adv, ADV, 0.45, "adversarial")
    ax.set_ylim(0, max(1, n_examples))
    ax.set_xlabel("channels sorted by natural count")
    ax.set_ylabel("number of activations")


@styled
def magnitude_plot(
    sub: pd.DataFrame, col: str = "magnitude", *, sort: str = "independent", title: str = ""
) -> Figure:
    """Per-channel magnitude, natural vs adversarial (CAS Figure 1)."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    _magnitude_axes(ax, sub, col, sort, title)
    legend_on_top(fig, ax)
    fig.tight_layout()
    return fig


@styled
def frequency_plot(sub: pd.DataFrame, *, n_examples: int, title: str = "") -> Figure:
    """Per-channel activation counts sorted by the natural count (CAS Figure 2, uniformity)."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    _frequency_axes(ax, sub, n_examples, title)
    legend_on_top(fig, ax)
    fig.tight_layout()
    return fig


@styled
def channel_comparison(df: pd.DataFrame, col: str, *, sort: str, n_examples: int) -> Figure:
    """One column per model: magnitude (top) and frequency (bottom), shared y per row."""
    models = list(dict.fromkeys(df["model"]))
    width = min(MAX_WIDTH, 2.4 * len(models) + 0.4)
    fig, axes = plt.subplots(2, len(models), figsize=(width, 5.0), squeeze=False, sharey="row")
    for j, m in enumerate(models):
        sub = df[df.model == m]
        _magnitude_axes(axes[0, j], sub, col, sort, m)
        _frequency_axes(axes[1, j], sub, n_examples, m)
        if j:
            axes[0, j].set_ylabel("")
            axes[1, j].set_ylabel("")
    legend_on_top(fig, axes)
    fig.tight_layout()
    return fig


@styled
def channel_scalars(scalars: dict[str, dict[str, Any]]) -> Figure:
    """Bars per model: mean magnitude, the Gini coefficient of the activation counts (0 =
    perfectly uniform; the normalised entropy sits at 0.99-1.00 for every model, a flat bar
    chart, so the table keeps it and the figure shows the Gini) and, when the scalars hold it,
    the cross-fitted tail share (adversarial minus natural share of activations on the natural
    ranking's tail half; 0 = same distribution)."""
    labels = list(scalars)
    idx = np.arange(len(labels))
    tail = all("tail_share_crossfit" in scalars[m] for m in labels)
    gini = all("gini_natural" in scalars[m] for m in labels)
    ncols = 3 if tail else 2
    fig, axes = plt.subplots(1, ncols, figsize=(min(MAX_WIDTH, 2.4 * ncols + 0.3), 2.8))
    if tail:
        vals = [scalars[m]["tail_share_crossfit"] for m in labels]
        axes[2].bar(idx, vals, 0.5, color=ADV)
        axes[2].axhline(0, color="k", lw=0.8)
        axes[2].set_xticks(idx, labels, rotation=20, ha="right")
        axes[2].set_title("tail share, adv. - natural")
    second = (
        ("gini", "Gini of activation counts\n(0 = uniform)")
        if gini
        else ("entropy", "normalised entropy of counts")
    )
    for ax, (key, title) in zip(axes, (("mean_magnitude", "mean channel magnitude"), second)):
        nat = [scalars[m][f"{key}_natural"] for m in labels]
        adv = [scalars[m][f"{key}_adversarial"] for m in labels]
        ax.bar(idx - 0.2, nat, 0.4, color=NAT, label="natural")
        ax.bar(idx + 0.2, adv, 0.4, color=ADV, label="adversarial")
        ax.set_xticks(idx, labels, rotation=20, ha="right")
        ax.set_title(title)
    legend_on_top(fig, axes)
    fig.tight_layout()
    return fig


@styled
def importance_hist(
    values: dict[str, tuple[np.ndarray, np.ndarray]], n_channels: dict[str, int]
) -> Figure:
    """Histogram of mask values per CIFS module (natural vs adversarial), one panel per module."""
    names = list(values)
    fig, axes = plt.subplots(
        1, len(names), figsize=(min(MAX_WIDTH, 3.6 * len(names)), 3.0), squeeze=False
    )
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
    legend_on_top(fig, axes)
    fig.tight_layout()
    return fig


@styled
def importance_channels(df: pd.DataFrame) -> Figure:
    """Mean mask per channel, sorted by the natural mean, natural vs adversarial, per module."""
    mods = list(dict.fromkeys(df["module"]))
    fig, axes = plt.subplots(
        1, len(mods), figsize=(min(MAX_WIDTH, 3.6 * len(mods)), 3.0), squeeze=False
    )
    for ax, m in zip(axes[0], mods):
        sub = df[df.module == m]
        order = np.argsort(-sub["mean_natural"].to_numpy(), kind="stable")
        _bars(ax, sub["mean_natural"].to_numpy()[order], NAT, 0.6, "natural")
        _bars(ax, sub["mean_adversarial"].to_numpy()[order], ADV, 0.45, "adversarial")
        ax.set_xlabel("channels sorted by natural mean importance")
        ax.set_ylabel("mean importance")
        ax.set_title(m)
    legend_on_top(fig, axes)
    fig.tight_layout()
    return fig


@styled
def pooling_plot(df: pd.DataFrame) -> Figure:
    """Robust accuracy (left) and pooled-feature change (right) vs feature-map size, per pooling."""
    fig, axes = plt.subplots(1, 2, figsize=(MAX_WIDTH, 3.2))
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
    legend_on_top(fig, axes, ncol=4)
    fig.tight_layout()
    return fig


@styled
def sap_plot(df: pd.DataFrame) -> Figure:
    """Robust accuracy vs EOT samples (left, one line per eps) and vs eps (right)."""
    fig, axes = plt.subplots(1, 2, figsize=(MAX_WIDTH, 3.2))
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
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=7)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- distributions

KIND_COLORS = {"natural": NAT, "adversarial": ADV}
STAT_TITLES = {"activation": "activation values", "channel_mean": "per-channel means"}


def mass_near_zero(values: np.ndarray) -> bool:
    """True when most of the mass sits near zero relative to the spread: the median absolute
    value is below 10% of the 99th percentile (ReLU maps: many zeros and a long right tail)."""
    v = np.abs(np.asarray(values, dtype=float))
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return False
    q50, q99 = np.quantile(v, [0.5, 0.99])
    return bool(q99 > 0 and q50 <= 0.1 * q99)


def symlog_linthresh(values: np.ndarray) -> float:
    """Linear range of the symlog axis: the 10th percentile of the non-zero absolute values."""
    v = np.abs(np.asarray(values, dtype=float))
    v = v[np.isfinite(v) & (v > 0)]
    return float(np.quantile(v, 0.1)) if len(v) else 1e-3


@styled
def activation_ecdf(table: pd.DataFrame, *, xscale: str = "auto") -> Figure:
    """ECDFs of activation values and of per-channel means, natural vs adversarial: one row
    per model, and for each of its layers two panels (values, channel means), so that two
    layers of three models fit one printed page at a readable size. ``xscale``: ``auto``
    (symlog where :func:`mass_near_zero`), ``symlog`` or ``linear``; a symlog axis is linear
    within +-:func:`symlog_linthresh`."""
    import seaborn as sns

    if xscale not in ("auto", "symlog", "linear"):
        raise ValueError(f"xscale must be auto, symlog or linear, not {xscale!r}")
    pairs = list(dict.fromkeys(zip(table["model"], table["layer"])))
    models = list(dict.fromkeys(m for m, _ in pairs))
    layers = {m: [lay for mm, lay in pairs if mm == m] for m in models}
    ncols = len(STAT_TITLES) * max(len(v) for v in layers.values())
    fig, axes = plt.subplots(
        len(models),
        ncols,
        figsize=(MAX_WIDTH, min(2.0, MAX_HEIGHT / max(1, len(models))) * len(models)),
        squeeze=False,
    )
    for i, model in enumerate(models):
        for k in range(ncols):
            if k // len(STAT_TITLES) >= len(layers[model]):
                axes[i, k].set_axis_off()
        for li, layer in enumerate(layers[model]):
            for j, stat in enumerate(STAT_TITLES):
                ax = axes[i, li * len(STAT_TITLES) + j]
                sub = table[(table.model == model) & (table.layer == layer) & (table.stat == stat)]
                sns.ecdfplot(
                    data=sub,
                    x="value",
                    hue="kind",
                    hue_order=[k for k in KIND_COLORS if k in set(sub["kind"])],
                    palette=KIND_COLORS,
                    ax=ax,
                )
                log = xscale == "symlog" or (xscale == "auto" and mass_near_zero(sub["value"]))
                if log:
                    ax.set_xscale("symlog", linthresh=symlog_linthresh(sub["value"]))
                    if len(sub) and float(sub["value"].min()) >= 0:
                        ax.set_xlim(left=0)
                short = "values" if stat == "activation" else "channel means"
                ax.set_title(f"{model} · {layer}\n{short}", fontsize=8)
                ax.set_xlabel("value" + (" (symlog)" if log else ""), fontsize=7)
                ax.set_ylabel("fraction ≤ value" if li == 0 and j == 0 else "")
                ax.tick_params(labelsize=7)
    _seaborn_legend_on_top(fig, axes)
    fig.tight_layout()
    return fig


@styled
def activation_violin(table: pd.DataFrame, summary: pd.DataFrame) -> Figure:
    """Split violins of log10 of the positive values per layer (natural left, adversarial
    right), activations (left column) and per-channel means (right), one row per model; the
    shares of zeros (and negatives) per layer and kind, which a log axis cannot show, are written
    under each violin."""
    import seaborn as sns

    models = list(dict.fromkeys(table["model"]))
    fig, axes = plt.subplots(
        len(models),
        len(STAT_TITLES),
        figsize=(MAX_WIDTH, min(2.6, MAX_HEIGHT / max(1, len(models))) * len(models)),
        squeeze=False,
    )
    for i, model in enumerate(models):
        for j, stat in enumerate(STAT_TITLES):
            ax = axes[i, j]
            sub = table[(table.model == model) & (table.stat == stat) & (table.value > 0)].copy()
            layers = list(dict.fromkeys(table.loc[table.model == model, "layer"]))
            kinds = [k for k in KIND_COLORS if k in set(table["kind"])]
            if sub.empty:
                ax.text(0.5, 0.5, "no positive values", ha="center", transform=ax.transAxes)
            else:
                sub["log10 value"] = np.log10(sub["value"].to_numpy())
                sns.violinplot(
                    data=sub,
                    x="layer",
                    y="log10 value",
                    hue="kind",
                    order=layers,
                    hue_order=kinds,
                    palette=KIND_COLORS,
                    split=len(kinds) == 2,
                    inner="quart",
                    cut=0,
                    density_norm="width",
                    ax=ax,
                )
            srow = summary[(summary.model == model) & (summary.stat == stat)]
            for x_pos, layer in enumerate(layers):
                bits = []
                for kind in kinds:
                    r = srow[(srow.layer == layer) & (srow.kind == kind)]
                    if len(r):
                        z, neg = float(r["share_zero"].iloc[0]), float(r["share_negative"].iloc[0])
                        bits.append(
                            f"{kind[:3]}: zeros {z:.0%}" + (f", negative {neg:.0%}" if neg else "")
                        )
                ax.annotate(
                    "\n".join(bits),
                    (x_pos, 0),
                    xycoords=("data", "axes fraction"),
                    xytext=(0, -30),
                    textcoords="offset points",
                    ha="center",
                    va="top",
                    fontsize=7,
                )
            ax.set_title(f"{model}: {STAT_TITLES[stat]} (positive values)", fontsize=9)
            ax.set_xlabel("")
            ax.set_ylabel("log10 value")
    _seaborn_legend_on_top(fig, axes)
    fig.tight_layout()
    return fig


def _seaborn_legend_on_top(fig: Figure, axes: Any) -> None:
    """Seaborn's per-panel ``kind`` legends (drawn over the data) replaced by one figure
    legend above the panels: natural in blue, adversarial in red."""
    from matplotlib.patches import Patch

    kinds = []
    for ax in np.ravel(axes):
        leg = ax.get_legend()
        if leg is not None:
            kinds.extend(t.get_text() for t in leg.get_texts() if t.get_text() not in kinds)
            leg.remove()
    kinds = [k for k in KIND_COLORS if k in kinds] or list(KIND_COLORS)
    fig.legend(
        [Patch(color=KIND_COLORS[k]) for k in kinds],
        kinds,
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncol=len(kinds),
        frameon=False,
    )
