"""The worst-case adversarial images of a run (``evaluate(..., save_adversarial=True)``, CLI
``--save-adversarial``), with the attack that made each, in a file that loads back as data.

While the protocol runs, every attack unit offers its candidates (:func:`offer`, one call in
:func:`evalkit.evaluation.units.attack_unit`); the active :class:`CandidateStore` keeps those
that were not classified correctly on every draw (``p < 1``) and, for a run directory, writes
them to ``DIR/adversarial/units/`` as each unit completes, so a resumed run still has them.
At the end :func:`assemble` picks, per eps and example, the candidate that set the example's
worst-case score (``worst@EPS:broken_by`` of examples.parquet: the first attack, in protocol
order and sanity probes included, at which the score reached its final value).

File format, one per eps: ``DIR/adversarial/<eps>.npz`` (``8/255`` -> ``8-255.npz``), arrays

========== =============== ==================================================================
``x``       float32 (N,C,H,W) the worst-case image per example in [0, 1]: the adversarial
                              candidate where an attack broke it, else the clean image
``y``       int64 (N,)        the true label
``index``   int64 (N,)        position of the example in the evaluated data
``attack``  str (N,)          id of the attack whose candidate ``x`` is (e.g. ``pgd-20``,
                              ``square-probe``); ``clean`` when the clean image is already
                              misclassified; empty when the example is robust
``score``   float32 (N,)      the example's worst-case robust score (1 = robust; for randomized
                              models the share of correct draws)
``eps``     str ()            the eps label; ``eps_value`` float64 (): its value; ``norm`` str
========== =============== ==================================================================

It is an ordinary data file (``x``, ``y``), so ``evaluate(model, "DIR/adversarial/8-255.npz")``
(``--data``) evaluates the model on the saved images: for a deterministic model its clean
accuracy there equals the run's worst-case robust accuracy at that eps.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from evalkit.errors import EvalkitError
from evalkit.utils.io import atomic_write_bytes

FOLDER = "adversarial"
_ACTIVE: contextvars.ContextVar[CandidateStore | None] = contextvars.ContextVar(
    "evalkit_adversarial_store", default=None
)


def file_name(eps_label: str) -> str:
    """``8/255`` -> ``8-255.npz`` (any character outside ``[A-Za-z0-9._-]`` becomes ``-``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", eps_label) + ".npz"


class CandidateStore:
    """Candidates with ``p < 1`` per (attack id, eps label): ``{index: image}``; with a
    ``folder``, each unit is also written there (``units/<key>.pt``) and earlier units are read
    back (resume, or other ranks of a torchrun)."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self.kept: dict[tuple[str, str], dict[int, torch.Tensor]] = {}
        if folder is not None:
            (folder / "units").mkdir(parents=True, exist_ok=True)

    def add(self, attack: str, eps: str, index: Sequence[int], x_adv: torch.Tensor) -> None:
        slot = self.kept.setdefault((attack, eps), {})
        for i, row in zip(index, x_adv):
            slot[int(i)] = row

    def offer(self, rec: dict[str, Any], x_adv: torch.Tensor) -> None:
        """Keep the candidates of one attack unit that some draw misclassified."""
        broken = [k for k, p in enumerate(rec.get("p", [])) if p < 1.0]
        if not broken:
            return
        index = [int(rec["index"][k]) for k in broken]
        rows = x_adv[broken].detach().float().cpu()
        self.add(rec["attack"], rec["eps"], index, rows)
        if self.folder is not None:
            buf = io.BytesIO()
            torch.save(
                {
                    "attack": rec["attack"],
                    "eps": rec["eps"],
                    "index": torch.tensor(index),
                    "x": rows,
                },
                buf,
            )
            name = re.sub(r"[^A-Za-z0-9._-]+", "_", rec["key"]) + ".pt"
            atomic_write_bytes(self.folder / "units" / name, buf.getvalue())

    def load(self) -> None:
        """Read every unit file in the folder (written by this or an earlier process)."""
        if self.folder is None:
            return
        for path in sorted((self.folder / "units").glob("*.pt")):
            obj = torch.load(path, map_location="cpu", weights_only=True)
            self.add(str(obj["attack"]), str(obj["eps"]), obj["index"].tolist(), obj["x"])


def offer(rec: dict[str, Any], x_adv: torch.Tensor) -> None:
    """Hand one attack unit's candidates to the active store (a no-op when none is active)."""
    store = _ACTIVE.get()
    if store is not None:
        store.offer(rec, x_adv)


@contextlib.contextmanager
def capture(store: CandidateStore | None) -> Iterator[CandidateStore | None]:
    """Make ``store`` the one :func:`offer` fills inside the block (None: capture nothing)."""
    token = _ACTIVE.set(store)
    try:
        yield store
    finally:
        _ACTIVE.reset(token)


def check_resumable(out: Path | None, resume: bool) -> None:
    """A resumed run can save its adversarial images only if it kept them from the start."""
    if out is None or not resume:
        return
    records = out / "records"
    started = records.is_dir() and any(p.stat().st_size for p in records.glob("*.jsonl"))
    if started and not (out / FOLDER / "units").is_dir():
        raise EvalkitError(
            f"{out} was started without save_adversarial, so its finished attacks kept no "
            "images: resume it without --save-adversarial, or start a new run directory"
        )


def assemble(
    store: CandidateStore,
    df: pd.DataFrame,
    budgets: Sequence[Any],
    fetch: Any,
) -> dict[str, dict[str, np.ndarray]]:
    """Per eps label, the arrays of the file format above, from the run's examples table
    ``df`` (examples.parquet) and ``fetch(index) -> (x, y)`` for the clean images."""
    store.load()
    index = torch.as_tensor(df["index"].to_numpy().copy(), dtype=torch.long)
    x_clean, y = fetch(index)
    out: dict[str, dict[str, np.ndarray]] = {}
    for b in budgets:
        by = df[f"worst@{b.label}:broken_by"].astype(str).to_numpy()
        x = x_clean.detach().float().cpu().clone()
        missing = 0
        for k, (i, attack) in enumerate(zip(index.tolist(), by)):
            if attack in ("", "clean"):
                continue
            row = store.kept.get((attack, b.label), {}).get(int(i))
            if row is None:
                missing += 1
                continue
            x[k] = row
        if missing:
            raise EvalkitError(
                f"{missing} worst-case adversarial images at eps {b.label} were not kept (a "
                "run resumed across evalkit versions?); rerun with a new out dir"
            )
        out[b.label] = {
            "x": x.numpy().astype(np.float32),
            "y": y.cpu().numpy().astype(np.int64),
            "index": index.numpy().astype(np.int64),
            "attack": by.astype(str),
            "score": df[f"worst@{b.label}:score"].to_numpy().astype(np.float32),
            "eps": np.array(b.label),
            "eps_value": np.array(float(b.value)),
            "norm": np.array(b.norm),
        }
    return out


def write(folder: Path, arrays: dict[str, dict[str, np.ndarray]]) -> dict[str, str]:
    """Write one ``.npz`` per eps into ``folder``; returns ``{eps label: path relative to the
    run directory}``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for label, data in arrays.items():
        buf = io.BytesIO()
        np.savez_compressed(buf, **data)
        path = folder / file_name(label)
        atomic_write_bytes(path, buf.getvalue())
        written[label] = f"{FOLDER}/{path.name}"
    return written
