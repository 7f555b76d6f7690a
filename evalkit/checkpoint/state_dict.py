"""State-dict normalisation: find the weights inside any common layout, strip the prefixes
training wrappers add, refuse NaN/inf, and load strictly with one-line errors.

Wrapper prefixes (``module.`` from DataParallel/DDP, ``_orig_mod.`` from ``torch.compile``,
``model.`` from Lightning-style wrappers), in any nesting and order, are removed *only where
removing them makes a key match* the architecture, so a real submodule called ``model`` keeps
its name.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from evalkit.errors import CheckpointError

#: Prefixes that training wrappers add in front of every key (DataParallel/DDP, torch.compile,
#: Lightning-style ``self.model``).
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")


def find_state_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    """The state_dict inside common foreign layouts (a bare dict of tensors, or one under
    ``state_dict``/``model_state_dict``/``model``/``net``); keys are returned unchanged."""
    if not isinstance(obj, Mapping):
        return None
    for key in ("state_dict", "model_state_dict", "model", "net"):
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        return None
    return {str(k): v for k, v in obj.items()}


def wrapper_strip_chain(key: str) -> Iterator[str]:
    """``key``, then ``key`` with 1, 2, ... leading wrapper prefixes removed (any order)."""
    yield key
    while True:
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                yield key
                break
        else:
            return


def strip_wrapper_prefixes(
    state: Mapping[str, torch.Tensor], expected: set[str]
) -> dict[str, torch.Tensor]:
    """Rename keys of ``state`` to the architecture's ``expected`` keys by removing the fewest
    leading wrapper prefixes (``module.``, ``_orig_mod.``, ``model.``, any nesting) that make the
    key match. A key that matches nothing is fully stripped (so error messages and
    :func:`adapt_foreign_state_dict` see the bare name) unless that collides with another key.
    Raises :class:`CheckpointError` when two keys land on the same name."""
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    unmatched: list[tuple[str, str, torch.Tensor]] = []
    for key, value in state.items():
        chain = list(wrapper_strip_chain(key))
        hit = next((c for c in chain if c in expected), None)
        if hit is None:
            unmatched.append((key, chain[-1], value))
            continue
        if hit in out:
            raise CheckpointError(
                f"state_dict keys {origin[hit]!r} and {key!r} both load into {hit!r} "
                "(the file mixes wrapped and unwrapped copies; keep one)"
            )
        out[hit], origin[hit] = value, key
    for key, bare, value in unmatched:
        name = bare if bare not in out and bare not in state else key
        out[name] = value
    return out


def adapt_foreign_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop parameters some repositories carry but never use (TRADES WRN's ``sub_block1``)."""
    return {k: v for k, v in sd.items() if not k.startswith("sub_block1.")}


def check_finite(state: Mapping[str, torch.Tensor], source: str | Path | None) -> None:
    """Refuse weights holding NaN/inf: :class:`CheckpointError` naming the first such tensor."""
    for key, value in state.items():
        if (value.is_floating_point() or value.is_complex()) and value.numel():
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                raise CheckpointError(
                    f"{source}: tensor {key!r} holds {bad} NaN/inf value(s) of {value.numel()}; "
                    "the weights are broken (re-export them from a run that did not diverge)"
                )


def load_weights_into(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    source: str | Path | None,
    what: str,
) -> None:
    """Strictly load ``state`` into ``model`` after the NaN/inf check, wrapper-prefix stripping
    and :func:`adapt_foreign_state_dict`. ``what`` names the model in errors (e.g.
    ``"arch 'resnet18' with defense at"``). Raises :class:`CheckpointError` (one line)."""
    check_finite(state, source)
    expected = set(model.state_dict())
    state = adapt_foreign_state_dict(strip_wrapper_prefixes(state, expected))
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch
        line = next(
            (ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln),
            str(exc).splitlines()[0],
        )
        raise CheckpointError(
            f"{source} does not match {what}: {line[:200]} (check --arch/--dataset)"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        parts = []
        if result.missing_keys:
            parts.append(f"missing {len(result.missing_keys)} keys (e.g. {result.missing_keys[0]})")
        if result.unexpected_keys:
            parts.append(
                f"unexpected {len(result.unexpected_keys)} keys (e.g. {result.unexpected_keys[0]})"
            )
        raise CheckpointError(f"{source} does not match {what}: " + "; ".join(parts))


def weights_of(
    obj: Any, source: str | Path | None, weights_set: str | None = None
) -> dict[str, torch.Tensor]:
    """The state_dict of anything :func:`read_checkpoint_file` returns (an evalkit checkpoint of
    either kind, or a foreign layout); :class:`CheckpointError` when there is none, and when the
    file holds raw and EMA weights and ``weights_set`` (``"ema"``/``"raw"``) does not say which
    (:func:`evalkit.checkpoint_files.select_weights`)."""
    from evalkit.checkpoint_files import select_weights

    chosen, _ = select_weights(obj, source, weights_set)
    state = dict(chosen) if chosen is not None else None
    if state is None:
        raise CheckpointError(
            f"{source} holds neither an evalkit checkpoint nor a state_dict of tensors"
        )
    return state


def classifier_rows(model: nn.Module, state: Mapping[str, torch.Tensor]) -> int | None:
    """Rows of the classifier weight in ``state`` (its class count), or None if absent."""
    key = f"{getattr(model, 'classifier_name', 'linear')}.weight"
    for name in state:
        if key in wrapper_strip_chain(name) and state[name].ndim == 2:
            return int(state[name].shape[0])
    return None
