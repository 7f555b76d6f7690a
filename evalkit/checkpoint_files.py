"""Which file a checkpoint path means, and which weights inside it.

* :func:`resolve_checkpoint_path` — a folder given as a checkpoint is resolved to the single
  checkpoint file inside (``checkpoint.pt`` first, as ``evalkit train`` writes it) or refused
  with the candidates listed; the file used is printed on stderr, so a run never silently
  evaluates a file the user did not name.
* :func:`select_weights` — a checkpoint holding several weight sets (raw and an exponential
  moving average: ``state_dict`` + ``state_dict_ema``, ``model`` + ``model_ema``, ``ema`` /
  ``ema_state_dict``, or one flat dict with ``ema.``-prefixed keys) is never read silently:
  ``weights_set="ema"`` or ``"raw"`` (CLI ``--weights-set``) picks one, and without it the load
  is refused naming the flag. Published robust accuracies usually come from the EMA copy. The
  choice is an argument of :func:`evalkit.checkpoint.load_model`; :func:`weights_set_choice`
  sets it for every loader inside a ``with`` block (how :func:`evalkit.evaluate` reaches the
  loaders of every model source without changing their signatures).
"""

from __future__ import annotations

import contextlib
import contextvars
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from evalkit.errors import CheckpointError

#: file suffixes that can hold a model, for a folder given as a checkpoint
SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".pt2")
#: keys under which common training scripts store the raw weights
RAW_KEYS = ("state_dict", "model_state_dict", "model", "net")
#: prefixes of EMA copies stored in one flat state_dict next to the raw weights
EMA_PREFIXES = ("ema.", "ema_model.", "model_ema.", "module_ema.")
WEIGHT_SETS = ("ema", "raw")
_CHOICE: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "evalkit_weights_set", default=None
)


@contextlib.contextmanager
def weights_set_choice(weights_set: str | None) -> Iterator[None]:
    """Inside the block, :func:`select_weights` uses ``weights_set`` when its caller passes
    none (None: no choice, as outside the block)."""
    if weights_set is not None and weights_set not in WEIGHT_SETS:
        raise CheckpointError(f"weights_set must be ema or raw, not {weights_set!r}")
    token = _CHOICE.set(weights_set)
    try:
        yield
    finally:
        _CHOICE.reset(token)


def resolve_checkpoint_path(path: str | Path, *, quiet: bool = False) -> Path:
    """``path`` itself for a file; for a folder the single checkpoint file inside
    (``checkpoint.pt`` when present), printed on stderr unless ``quiet``. Raises
    :class:`CheckpointError` for a missing path or a folder with none or several candidates."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path} (check the --ckpt path)")
    if not path.is_dir():
        return path
    if (path / "checkpoint.pt").is_file():
        found = path / "checkpoint.pt"
    else:
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
        if not files:
            raise CheckpointError(
                f"{path} is a folder without a checkpoint file ({', '.join(SUFFIXES)}); pass "
                "the file itself"
            )
        if len(files) > 1:
            names = ", ".join(p.name for p in files[:6]) + (" ..." if len(files) > 6 else "")
            raise CheckpointError(
                f"{path} holds {len(files)} checkpoint files ({names}); pass the one to use"
            )
        found = files[0]
    if not quiet:
        print(f"evalkit: checkpoint folder {path} -> using {found}", file=sys.stderr)
    return found


def _tensor_map(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def _nested(obj: Any) -> Mapping[str, torch.Tensor] | None:
    """A mapping of tensors, directly or one level down (``{"ema": {"state_dict": ...}}``,
    ``{"model_ema": {"module": ...}}``)."""
    if _tensor_map(obj):
        return obj
    if isinstance(obj, Mapping):
        for value in obj.values():
            if _tensor_map(value):
                return value
    return None


def weight_sets(obj: Any) -> dict[str, tuple[str, Mapping[str, torch.Tensor]]]:
    """The weight sets ``obj`` holds: ``{"raw": (where, sd), "ema": (where, sd)}`` (either may
    be absent); ``where`` names the key(s), e.g. ``"state_dict_ema"`` or ``"keys ema.*"``."""
    if not isinstance(obj, Mapping):
        return {}
    out: dict[str, tuple[str, Mapping[str, torch.Tensor]]] = {}
    if _tensor_map(obj):  # one flat dict: raw keys and maybe ema-prefixed copies
        ema = {k: v for k, v in obj.items() if str(k).startswith(EMA_PREFIXES)}
        if ema and len(ema) < len(obj):
            prefix = next(p for p in EMA_PREFIXES if any(str(k).startswith(p) for k in ema))
            stripped = {
                str(k)[len(p) :]: v
                for k, v in ema.items()
                for p in EMA_PREFIXES
                if str(k).startswith(p)
            }
            raw = {k: v for k, v in obj.items() if k not in ema}
            out["raw"] = ("keys without an ema prefix", raw)
            out["ema"] = (f"keys {prefix}*", stripped)
        else:
            out["raw"] = ("the file's tensors", obj)
        return out
    for key in RAW_KEYS:
        if key in obj and _tensor_map(obj[key]):
            out["raw"] = (key, obj[key])
            break
    for key in obj:
        if "ema" in re.split(r"[^a-z]+", str(key).lower()) and _nested(obj[key]) is not None:
            out["ema"] = (str(key), _nested(obj[key]))  # type: ignore[assignment]
            break
    return out


def select_weights(
    obj: Any, source: str | Path | None, weights_set: str | None
) -> tuple[Mapping[str, torch.Tensor] | None, str | None]:
    """``(state_dict, chosen)`` from a read checkpoint object: ``chosen`` is ``"raw"`` or
    ``"ema"`` with the key it came from, e.g. ``"ema (state_dict_ema)"``. ``(None, None)`` when
    ``obj`` holds no recognisable weights (the caller reports that). Raises
    :class:`CheckpointError` when several sets exist and ``weights_set`` is None, or when the
    asked-for set is absent."""
    if weights_set is None:
        weights_set = _CHOICE.get()
    if weights_set is not None and weights_set not in WEIGHT_SETS:
        raise CheckpointError(f"weights_set must be ema or raw, not {weights_set!r}")
    sets = weight_sets(obj)
    if not sets:
        return None, None
    if weights_set is None:
        if len(sets) > 1:
            raise CheckpointError(
                f"{source} holds two weight sets, raw ({sets['raw'][0]}) and EMA "
                f"({sets['ema'][0]}); choose one with --weights-set ema|raw "
                "(weights_set= in Python; published numbers usually use the EMA weights)"
            )
        weights_set = next(iter(sets))
    if weights_set not in sets:
        have = ", ".join(f"{k} ({where})" for k, (where, _) in sets.items())
        raise CheckpointError(
            f"{source} holds no {weights_set} weights (it holds {have}); drop --weights-set "
            "or pick the set it has"
        )
    where, state = sets[weights_set]
    return state, f"{weights_set} ({where})"
