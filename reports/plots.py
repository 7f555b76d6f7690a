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

from reports.runs import RunData, as_float, eps_key, eps_value, fmt_eps  # noqa: E402

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


def figure_to_data_uri(fig: Figure, dpi: int = 110) -> str:
    """PNG-encode a figure as a ``data:image/png;base64`` URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def file_to_data_uri(path: Path) -> str:
    """Embed an existing image file (PNG/SVG/JPEG). SVG shown through ``<img>`` cannot run script."""
    mime = MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def history_plot(history: Sequence[dict[str, Any]]) -> str | None:
    """Loss and accuracies per epoch from a checkpoint's training history (None if empty)."""
    rows = [h for h in history if isinstance(h, dict)]
    if not rows:
        return None
    epochs = [as_float(h.get("epoch")) for h in rows]
    if any(e is None for e in epochs):
        epochs = [float(i + 1) for i in range(len(rows))]
    acc_keys = [
        k
        for k in rows[0]
        if "acc" in k.lower() and any(as_float(h.get(k)) is not None for h in rows)
    ]
    loss_keys = [
        k
        for k in rows[0]
        if "loss" in k.lower() and any(as_float(h.get(k)) is not None for h in rows)
    ]
    if not acc_keys and not loss_keys:
        return None
    with rc_context(RC):
        fig = Figure(figsize=(6.4, 2.6))
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
        if loss_keys:
            ax.legend(fontsize=7)
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
        if acc_keys:
            ax2.legend(fontsize=7)
        fig.tight_layout()
        return figure_to_data_uri(fig)


def eps_curve(run: RunData) -> str | None:
    """Accuracy vs eps per attack plus the worst case; clean accuracy sits at eps = 0."""
    by_attack: dict[str, list[tuple[float, float]]] = {}
    for r in run.results:
        eps, acc = eps_value(r), as_float(r.get("robust_accuracy"))
        if eps is not None and acc is not None:
            by_attack.setdefault(str(r["attack"]), []).append((eps, acc))
    worst = [(eps_value(r), as_float(r.get("robust_accuracy"))) for r in run.worst_case]
    worst = [(e, a) for e, a in worst if e is not None and a is not None]
    if not by_attack and not worst:
        return None
    clean = run.clean_accuracy
    with rc_context(RC):
        fig = Figure(figsize=(5.2, 3.2))
        ax = fig.add_subplot(1, 1, 1)
        for i, (attack, pts) in enumerate(sorted(by_attack.items())):
            pts = sorted(pts)
            if clean is not None:
                pts = [(0.0, clean), *pts]
            ax.plot(
                [p[0] for p in pts],
                [100 * p[1] for p in pts],
                marker="o",
                ms=3,
                lw=1,
                color=PALETTE[i % len(PALETTE)],
                label=attack,
            )
        if worst:
            pts = sorted(worst)
            if clean is not None:
                pts = [(0.0, clean), *pts]
            ax.plot(
                [p[0] for p in pts],
                [100 * p[1] for p in pts],
                color="black",
                lw=2.2,
                ls="--",
                marker="s",
                ms=4,
                label="worst case",
            )
        ticks = sorted(
            {0.0, *(e for pts in by_attack.values() for e, _ in pts), *(e for e, _ in worst)}
        )
        ax.set_xticks(ticks)
        ax.set_xticklabels([fmt_eps(t) for t in ticks], rotation=45 if len(ticks) > 5 else 0)
        proto = run.summary.get("protocol") if isinstance(run.summary.get("protocol"), dict) else {}
        norm = {"linf": "L∞", "l2": "L2"}.get(str(proto.get("norm", "")).lower(), "")
        ax.set_xlabel(f"eps ({norm + ' ' if norm else ''}radius in [0,1] pixel space)")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.legend(fontsize=7, loc="upper right")
        fig.tight_layout()
        return figure_to_data_uri(fig)


def per_class_plot(rows: Sequence[dict[str, Any]], robust_label: str) -> str | None:
    """Grouped bars of clean vs robust accuracy for each class."""
    rows = [r for r in rows if r.get("clean") is not None or r.get("robust") is not None]
    if not rows:
        return None
    with rc_context(RC):
        fig = Figure(figsize=(6.4, 2.8))
        ax = fig.add_subplot(1, 1, 1)
        xs = list(range(len(rows)))
        width = 0.4
        ax.bar(
            [x - width / 2 for x in xs],
            [100 * (r.get("clean") or 0) for r in rows],
            width,
            label="clean",
            color="#9ecae1",
        )
        ax.bar(
            [x + width / 2 for x in xs],
            [100 * (r.get("robust") or 0) for r in rows],
            width,
            label=robust_label,
            color="#de2d26",
        )
        ax.set_xticks(xs)
        ax.set_xticklabels([str(r["name"]) for r in rows], rotation=35, ha="right", fontsize=7)
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 105)
        ax.legend(fontsize=7)
        fig.tight_layout()
        return figure_to_data_uri(fig)


def comparison_plot(runs: Sequence[RunData], labels: Sequence[str]) -> str | None:
    """Worst-case robust accuracy vs eps, one line per run, for the leaderboard."""
    lines = []
    for run, label in zip(runs, labels):
        pts = [(eps_value(r), as_float(r.get("robust_accuracy"))) for r in run.worst_case]
        pts = sorted((e, a) for e, a in pts if e is not None and a is not None)
        if run.clean_accuracy is not None:
            pts = [(0.0, run.clean_accuracy), *pts]
        if len(pts) > 0:
            lines.append((label, pts))
    if not lines:
        return None
    with rc_context(RC):
        fig = Figure(figsize=(5.6, 3.2))
        ax = fig.add_subplot(1, 1, 1)
        for i, (label, pts) in enumerate(lines):
            ax.plot(
                [p[0] for p in pts],
                [100 * p[1] for p in pts],
                marker="o",
                ms=3,
                color=PALETTE[i % len(PALETTE)],
                label=label,
            )
        ticks = sorted({eps_key(e) for _, pts in lines for e, _ in pts})
        ax.set_xticks(ticks)
        ax.set_xticklabels([fmt_eps(t) for t in ticks], rotation=45 if len(ticks) > 5 else 0)
        ax.set_xlabel("eps")
        ax.set_ylabel("worst-case accuracy (%)")
        ax.set_ylim(-2, 102)
        ax.legend(fontsize=7)
        fig.tight_layout()
        return figure_to_data_uri(fig)
