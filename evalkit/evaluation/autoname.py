"""Auto-named run directories (``runs/attack-<model>-<YYYYmmdd-HHMMSS>``) and finding the
latest one of a model and its data again, so ``evalkit attack --ckpt M --resume`` continues the
run that ``evalkit attack --ckpt M`` started without ``--out``.

A candidate matches when its ``config.json`` is bound to the same inputs: the sha256 of the
checkpoint file (when the model is a file), and the same data (the sha256 of a data file, or
the same dataset name; with neither given, a run whose data came from a dataset rather than a
file). The resume itself then checks every fingerprint (:mod:`evalkit.evaluation.rundir`), so
a wrong pick is refused with the reason rather than mixed in.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from pathlib import Path
from typing import Any

from evalkit.evaluation.fingerprint import file_sha256

ROOT = Path("runs")
STAMP = "%Y%m%d-%H%M%S"
_STAMP_RE = r"\d{8}-\d{6}"


def model_stem(spec: str | Path) -> str:
    """The short model name used in auto-named folders: the checkpoint's folder for
    ``.../checkpoint.pt``, else the file's stem (the part of a ``pkg.mod:fn`` spec before ``:``)."""
    name = Path(str(spec).split(":")[0])
    stem = name.parent.name if name.name == "checkpoint.pt" else name.stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem) or "model"


def auto_run_dir(spec: str | Path, root: str | Path = ROOT, now: Any = None) -> Path:
    """``root/attack-<stem>-<timestamp>`` for a new run of ``spec``."""
    stamp = (now or _dt.datetime.now()).strftime(STAMP)
    return Path(root) / f"attack-{model_stem(spec)}-{stamp}"


def _config(folder: Path) -> dict[str, Any] | None:
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return cfg if isinstance(cfg, dict) else None


def latest_auto_run(
    spec: str | Path,
    *,
    checkpoint: str | Path | None = None,
    data: str | Path | None = None,
    dataset: str | None = None,
    root: str | Path = ROOT,
) -> Path | None:
    """The newest ``root/attack-<stem>-<timestamp>`` folder of ``spec`` bound to the same
    ``checkpoint`` file (sha256) and data (see the module docstring), or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    pattern = re.compile(rf"attack-{re.escape(model_stem(spec))}-{_STAMP_RE}$")
    folders = sorted(
        (p for p in root.iterdir() if p.is_dir() and pattern.match(p.name)), reverse=True
    )
    ckpt_sha = file_sha256(checkpoint) if checkpoint and Path(checkpoint).is_file() else None
    data_sha = file_sha256(data) if data and Path(data).is_file() else None
    for folder in folders:
        cfg = _config(folder)
        if cfg is None:
            continue
        if ckpt_sha is not None and cfg.get("checkpoint_sha256") != ckpt_sha:
            continue
        if data_sha is not None:
            if cfg.get("data_file_sha256") != data_sha:
                continue
        elif dataset is not None:
            if cfg.get("data") != dataset:
                continue
        elif cfg.get("data_file_sha256"):
            continue
        return folder
    return None
