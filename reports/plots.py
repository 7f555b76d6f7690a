"""Matplotlib figures rendered straight to base64 ``data:`` URIs.

The report must be one self-contained file with no network fetches, so every figure is a
PNG embedded inline. Figures are built with ``matplotlib.figure.Figure`` (no pyplot global
state, no GUI backend), and user-supplied text is drawn with mathtext off so a model named
``$x$`` or ``<script>`` is shown literally.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg", force=False)
from matplotlib import rc_context  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from reports.runs import RunData, as_float  # noqa: E402

RC = {
    "text.parse_math": False,
    "font.size": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "svg.fonttype": "none",
}
PALETTE = [
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]


#: the largest figure a printed A4 page shows whole (inches): text width, and page height
#: under a heading and a caption
PAGE_WIDTH_IN, PAGE_HEIGHT_IN = 7.3, 9.4


class Plot(str):
    """A figure's ``data:`` URI that also knows its natural size in inches (``width_in``,
    ``height_in``), so the report shows it at the size its fonts were chosen for: never scaled
    down on a printed page unless it is taller than the page (then it is scaled to fit, so no
    part of it is cut off)."""

    width_in: float | None = None
    height_in: float | None = None

    def __new__(cls, uri: str, size_in: tuple[float, float] | None = None) -> Plot:
        obj = super().__new__(cls, uri)
        obj.width_in, obj.height_in = size_in if size_in else (None, None)
        return obj

    @property
    def style(self) -> str:
        """CSS for the ``<img>``: its natural width, reduced so that its height fits a printed
        page (and capped by ``max-width: 100%``)."""
        if not self.width_in:
            return ""
        width = self.width_in
        if self.height_in and self.height_in > PAGE_HEIGHT_IN:
            width *= PAGE_HEIGHT_IN / self.height_in
        return f"width: {width:.2f}in"


def png_size_in(data: bytes, default_dpi: float = 100.0) -> tuple[float, float] | None:
    """``(width, height)`` in inches of a PNG: pixels over the dpi recorded in the file
    (matplotlib writes it), else ``default_dpi``. None when the bytes are not a readable image."""
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            dpi = float(im.info.get("dpi", (default_dpi, default_dpi))[0] or default_dpi)
            return im.size[0] / dpi, im.size[1] / dpi
    except Exception:  # noqa: BLE001 - an unreadable image is shown at the browser's size
        return None


def figure_to_data_uri(fig: Figure, dpi: int = 110) -> Plot:
    """PNG-encode a figure as a ``data:image/png;base64`` URI (a :class:`Plot`)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    data = buf.getvalue()
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return Plot(uri, png_size_in(data, dpi))


def legend_outside(ax: Any, **kw: Any) -> None:
    """The legend right of the axes (outside the data), small but readable."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(
            handles,
            labels,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            borderaxespad=0.0,
            frameon=False,
            fontsize=8,
            **kw,
        )


MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def file_to_data_uri(path: Path) -> Plot:
    """Embed an existing image file (PNG/SVG/JPEG). SVG shown through ``<img>`` cannot run script."""
    mime = MIME.get(path.suffix.lower(), "application/octet-stream")
    data = path.read_bytes()
    size = png_size_in(data) if path.suffix.lower() == ".png" else None
    return Plot(f"data:{mime};base64," + base64.b64encode(data).decode("ascii"), size)


def _history_keys(rows: Sequence[dict[str, Any]], word: str) -> list[str]:
    return [
        k
        for k in rows[0]
        if word in k.lower() and any(as_float(h.get(k)) is not None for h in rows)
    ]


def history_plot(history: Sequence[dict[str, Any]]) -> str | None:
    """Loss and accuracies per epoch from a checkpoint's training history; None when there is
    no history or only one epoch (a single point per curve shows nothing a table does not: the
    report lists that epoch's values instead, :func:`history_single`)."""
    rows = [h for h in history if isinstance(h, dict)]
    if len(rows) < 2:
        return None
    epochs = [as_float(h.get("epoch")) for h in rows]
    if any(e is None for e in epochs):
        epochs = [float(i + 1) for i in range(len(rows))]
    acc_keys, loss_keys = _history_keys(rows, "acc"), _history_keys(rows, "loss")
    if not acc_keys and not loss_keys:
        return None
    with rc_context(RC):
        fig = Figure(figsize=(6.6, 2.7))
        ax = fig.add_subplot(1, 2, 1)
        for i, key in enumerate(loss_keys):
            ax.plot(
                epochs,
                [as_float(h.get(key)) for h in rows],
                marker="o",
                ms=3,
                color=PALETTE[i % len(PALETTE)],
                label=key,
            )
        ax.set_xlabel("epoch")
        ax.set_title("training loss")
        ax2 = fig.add_subplot(1, 2, 2)
        for i, key in enumerate(acc_keys):
            vals = [as_float(h.get(key)) for h in rows]
            ax2.plot(
                epochs,
                [v * 100 if v is not None and v <= 1.0 else v for v in vals],
                marker="o",
                ms=3,
                color=PALETTE[(i + 2) % len(PALETTE)],
                label=key,
            )
        ax2.set_xlabel("epoch")
        ax2.set_ylabel("%")
        ax2.set_title("accuracy")
        for a in (ax, ax2):
            a.xaxis.get_major_locator().set_params(integer=True)
            if a.get_legend_handles_labels()[0]:
                a.legend(
                    loc="upper center",
                    bbox_to_anchor=(0.5, -0.28),
                    ncol=2,
                    frameon=False,
                    fontsize=8,
                )
        fig.tight_layout()
        return figure_to_data_uri(fig)


def history_single(history: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """The values of a one-epoch training history as ``(key, text)`` pairs (empty otherwise)."""
    rows = [h for h in history if isinstance(h, dict)]
    if len(rows) != 1:
        return []
    from reports.fmt import pretty

    return [(str(k), pretty(v)) for k, v in rows[0].items() if v is not None]


def eps_curve(run: RunData) -> str | None:
    """Accuracy vs eps per attack plus the worst case (bold, dashed), each with 95% error bars;
    clean accuracy sits at eps = 0 (:func:`reports.curves.accuracy_vs_eps`)."""
    from reports.curves import accuracy_vs_eps, run_series

    proto = run.summary.get("protocol") if isinstance(run.summary.get("protocol"), dict) else {}
    return accuracy_vs_eps(run_series(run), norm=str(proto.get("norm", "")))


def per_class_plot(rows: Sequence[dict[str, Any]], robust_label: str) -> str | None:
    """Grouped bars of clean vs robust accuracy for each class, with 95% error bars where the
    rows carry intervals (``clean_ci``, ``robust_ci``)."""
    rows = [r for r in rows if r.get("clean") is not None or r.get("robust") is not None]
    if not rows:
        return None

    def bars(key: str) -> tuple[list[float], list[list[float]] | None]:
        vals = [100 * (r.get(key) or 0) for r in rows]
        cis = [r.get(f"{key}_ci") for r in rows]
        if not any(cis):
            return vals, None
        low = [v - 100 * c[0] if c else 0.0 for v, c in zip(vals, cis)]
        high = [100 * c[1] - v if c else 0.0 for v, c in zip(vals, cis)]
        return vals, [low, high]

    with rc_context(RC):
        fig = Figure(figsize=(6.6, 3.0))
        ax = fig.add_subplot(1, 1, 1)
        xs = list(range(len(rows)))
        width = 0.4
        err = {"ecolor": "#333333", "capsize": 2, "error_kw": {"elinewidth": 0.8}}
        clean, clean_err = bars("clean")
        robust, robust_err = bars("robust")
        ax.bar(
            [x - width / 2 for x in xs],
            clean,
            width,
            yerr=clean_err,
            label="clean",
            color="#9ecae1",
            **err,
        )
        ax.bar(
            [x + width / 2 for x in xs],
            robust,
            width,
            yerr=robust_err,
            label=robust_label,
            color="#de2d26",
            **err,
        )
        ax.set_xticks(xs)
        ax.set_xticklabels([str(r["name"]) for r in rows], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 105)
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False, fontsize=8)
        fig.tight_layout()
        return figure_to_data_uri(fig)


def comparison_plot(runs: Sequence[RunData], labels: Sequence[str]) -> str | None:
    """Worst-case robust accuracy vs eps with 95% error bars, one line per run, for the
    leaderboard (eps 0 = clean)."""
    from reports.curves import Series, accuracy_vs_eps, worst_series

    series: list[Series] = []
    for i, (run, label) in enumerate(zip(runs, labels)):
        style = {"color": PALETTE[i % len(PALETTE)], "marker": "o", "ms": 3.5, "lw": 1.4}
        series.append(worst_series(run, label, style))
    return accuracy_vs_eps(series, ylabel="worst-case accuracy (%)")
