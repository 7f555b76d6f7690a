"""The run directory: settings, append-only batch records, and resume.

Layout::

    DIR/config.json            settings of the run (checked on --resume)
    DIR/records/rank{R}.jsonl  one JSON line per completed unit (clean pass or one attack on one
                               batch at one eps), flushed and fsynced as it completes
    DIR/summary.json           written at the end (atomically)
    DIR/examples.parquet       one row per example, written at the end (atomically)

A kill can leave at most a partial last line in a records file; it is ignored on reading and
the unit is redone. JSON floats round-trip exactly, so a resumed run rebuilds the same summary.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.utils.io import atomic_write_json

# settings that change results: a resumed run must match them exactly. The content hashes
# (model_sha256: every weight; data_sha256: the evaluated tensors; checkpoint_sha256 / data_file
# _sha256: the files' bytes) bind records to what produced them, not to paths.
FINGERPRINT_KEYS = {
    "model_sha256": "the model's weights",
    "checkpoint_sha256": "the checkpoint file's bytes",
    "data_sha256": "the evaluation data (x, y)",
    "data_file_sha256": "the data file's bytes",
    "n": "the number of examples",
    "batch_size": "the batch size",
    "acceleration": "the speed options (precision, channels_last, compile)",
    "eps": "eps",
    "norm": "the norm",
    "seed": "the seed",
    "plans": "the attack plans",
    "compaction": "compaction",
    "mc_draws": "the Monte-Carlo draws",
    "evalkit_version": "the evalkit version",
    "torch_version": "the torch version",
}


def _short(v: Any) -> str:
    text = json.dumps(v, default=str)
    return text[:19] + "..." if len(text) > 22 else text


def unit_key(kind: str, batch: int, attack: str | None = None, eps: str | None = None) -> str:
    """Stable key of one unit of work."""
    return f"clean|{batch}" if kind == "clean" else f"{attack}|{eps}|{batch}"


def prepare_run_dir(out: Path, config: dict[str, Any], *, resume: bool, is_writer: bool) -> None:
    """Create ``out`` (or check it on resume) and write config.json.

    Without ``resume`` an existing non-empty ``out`` is refused, so a finished run is never
    silently mixed with a new one.
    """
    cfg_path = out / "config.json"
    exists = out.exists() and any(out.iterdir())
    if exists and not resume:
        raise EvalkitError(
            f"run directory {out} already exists: resume it, or pick another out dir"
        )
    if resume and cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        new = json.loads(json.dumps(config, default=str))
        diff = [k for k in FINGERPRINT_KEYS if old.get(k) != new.get(k)]
        if diff:
            what = "; ".join(
                f"{FINGERPRINT_KEYS[k]} changed ({_short(old.get(k))} -> {_short(new.get(k))})"
                for k in diff
            )
            raise EvalkitError(
                f"cannot resume {out}: {what} (evaluate the same inputs, or use a new out dir)"
            )
    if is_writer:
        (out / "records").mkdir(parents=True, exist_ok=True)
        if not cfg_path.exists():
            atomic_write_json(cfg_path, config)


class RecordLog:
    """Append-only JSONL of completed units for one rank, plus everything already on disk."""

    def __init__(self, out: Path | None, rank: int = 0) -> None:
        self.out = out
        self.records: dict[str, dict[str, Any]] = {}
        self._fh = None
        if out is None:
            return
        folder = out / "records"
        folder.mkdir(parents=True, exist_ok=True)
        for path in sorted(folder.glob("*.jsonl")):
            self.records.update(read_records(path))
        path = folder / f"rank{rank}.jsonl"
        if path.exists() and path.stat().st_size:
            with open(path, "rb") as fh:
                fh.seek(-1, os.SEEK_END)
                partial = fh.read(1) != b"\n"
            if partial:  # a kill mid-line: terminate it so the next record parses
                with open(path, "ab") as fh:
                    fh.write(b"\n")
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 (kept open for appends)

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def add(self, record: dict[str, Any]) -> None:
        """Keep ``record`` and persist it before returning (flush + fsync)."""
        self.records[record["key"]] = record
        if self._fh is not None:
            self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_records(path: Path) -> dict[str, dict[str, Any]]:
    """Parse a records file, skipping a torn last line."""
    out: dict[str, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and "key" in rec:
                out[rec["key"]] = rec
    return out
