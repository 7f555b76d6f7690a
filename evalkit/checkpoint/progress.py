"""Whether a checkpoint holds a finished training run, read from what the trainer records in it
(``train_config["completed"]``, ``epoch`` vs ``train_config["epochs"]``).

A checkpoint fact, not a training one: evaluation and studies refuse or flag unfinished runs
without depending on the trainer. :mod:`evalkit.training.api` re-exports these names.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evalkit.checkpoint.format import FORMAT, read_checkpoint_file, read_meta
from evalkit.errors import EvalkitError


def _train_fields(meta: Any) -> tuple[dict[str, Any], int | None]:
    if isinstance(meta, Mapping):
        return dict(meta.get("train_config") or {}), meta.get("epoch")
    return dict(getattr(meta, "train_config", None) or {}), getattr(meta, "epoch", None)


def training_complete(meta: Any) -> bool:
    """Whether a checkpoint holds a finished training run.

    ``meta`` is a :class:`~evalkit.checkpoint.CheckpointMeta` or the raw checkpoint dict. The
    trainer writes ``train_config["completed"]`` on every epoch (True only after the last);
    checkpoints written before that flag existed count as complete when ``epoch`` reached
    ``train_config["epochs"]``. A checkpoint without training metadata (a foreign state_dict, a
    model saved by hand) says nothing about training and counts as complete.
    """
    tc, epoch = _train_fields(meta)
    if "completed" in tc:
        return bool(tc["completed"])
    if not tc or tc.get("epochs") is None or epoch is None:
        return True
    return int(epoch) >= int(tc["epochs"])


def training_progress(meta: Any) -> tuple[int | None, int | None]:
    """``(epochs done, epochs planned)`` as the checkpoint records them (None when unknown)."""
    tc, epoch = _train_fields(meta)
    planned = tc.get("epochs")
    return (None if epoch is None else int(epoch), None if planned is None else int(planned))


def require_complete(path: str | Path) -> None:
    """Raise a one-line :class:`EvalkitError` unless ``path`` holds a finished model."""
    obj = read_checkpoint_file(path)
    if not (isinstance(obj, dict) and obj.get("format") == FORMAT):
        return  # a foreign state_dict: nothing records its training
    meta = read_meta(obj, path)
    if not training_complete(meta):
        done, planned = training_progress(meta)
        raise EvalkitError(
            f"{path} is an unfinished training checkpoint (epoch {done} of {planned}): finish it "
            "with resume=True (evalkit train --resume) before evaluating or studying it"
        )
