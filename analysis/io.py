"""Writing a study's outputs: tables (CSV + parquet), figures (PNG + SVG), arrays (.npz) and the
``analysis.json`` index the report builder reads (schema in ``analysis/README.md``).

Every file is written atomically and listed with a path relative to the output folder, so the
folder can be moved or embedded in a report as a unit.
"""

from __future__ import annotations

import datetime as _dt
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evalkit import __version__
from evalkit.utils.io import atomic_write_bytes, atomic_write_json

SCHEMA = "evalkit-analysis/1"


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf become None, numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


class AnalysisWriter:
    """Collects the files of one study in ``out`` and writes ``analysis.json`` last."""

    def __init__(self, out: str | Path, study: str) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.study = study
        self.tables: list[dict[str, Any]] = []
        self.figures: list[dict[str, Any]] = []
        self.arrays: list[dict[str, Any]] = []

    def table(self, df: pd.DataFrame, name: str, description: str = "") -> dict[str, Any]:
        """Write ``name.csv`` and ``name.parquet``."""
        csv_path = self.out / f"{name}.csv"
        atomic_write_bytes(csv_path, df.to_csv(index=False).encode("utf-8"))
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        atomic_write_bytes(self.out / f"{name}.parquet", buf.getvalue())
        entry = {
            "name": name,
            "csv": f"{name}.csv",
            "parquet": f"{name}.parquet",
            "rows": int(len(df)),
            "columns": list(map(str, df.columns)),
            "description": description,
        }
        self.tables.append(entry)
        return entry

    def figure(
        self, fig: Any, name: str, caption: str = "", *, in_report: bool = True
    ) -> dict[str, Any]:
        """Save a matplotlib figure as ``name.png`` (150 dpi) and ``name.svg``, then close it.
        ``in_report=False`` keeps the files but tells the report to leave the figure out (e.g.
        per-model figures that a comparison figure already shows side by side)."""
        import matplotlib.pyplot as plt

        for ext, kw in (("png", {"dpi": 150}), ("svg", {})):
            buf = io.BytesIO()
            fig.savefig(buf, format=ext, bbox_inches="tight", **kw)
            atomic_write_bytes(self.out / f"{name}.{ext}", buf.getvalue())
        plt.close(fig)
        entry = {"name": name, "png": f"{name}.png", "svg": f"{name}.svg", "caption": caption}
        if not in_report:
            entry["in_report"] = False
        self.figures.append(entry)
        return entry

    def array(self, name: str, description: str = "", **arrays: np.ndarray) -> dict[str, Any]:
        """Write raw arrays to ``name.npz`` (e.g. per-example spatial means)."""
        buf = io.BytesIO()
        np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
        atomic_write_bytes(self.out / f"{name}.npz", buf.getvalue())
        entry = {
            "name": name,
            "npz": f"{name}.npz",
            "keys": sorted(arrays),
            "description": description,
        }
        self.arrays.append(entry)
        return entry

    def finish(
        self,
        *,
        models: list[dict[str, Any]],
        params: dict[str, Any],
        scalars: dict[str, Any],
        finding: str,
        notes: list[str] | None = None,
    ) -> Path:
        """Write ``analysis.json`` and return its path."""
        doc = {
            "schema": SCHEMA,
            "study": self.study,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "evalkit_version": __version__,
            "finding": finding,
            "models": models,
            "params": params,
            "scalars": scalars,
            "notes": list(notes or []),
            "files": {"tables": self.tables, "figures": self.figures, "arrays": self.arrays},
        }
        path = self.out / "analysis.json"
        atomic_write_json(path, _clean(doc))
        return path
