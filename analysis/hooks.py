"""Forward hooks that read one named layer's output, and the choice of that layer.

The analysis must see the features *before* any CAS/CIFS mask: a masked map would show the
defense's own reweighting, not what the network computed. Wrapped blocks keep the original block
as an attribute (see :data:`INNER_ATTRS`), so the default layer of a defended model is the inner
block of the last wrapped site inside ``model.penultimate``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn

from evalkit.errors import EvalkitError

# attribute names under which CAS/CIFS wrappers keep the block they wrap
INNER_ATTRS = ("block", "inner", "module")


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (dotted, e.g. ``layer4.1``), with a one-line error."""
    if name in ("", "."):
        return model
    try:
        return model.get_submodule(name)
    except AttributeError:
        known = [n for n, _ in model.named_modules() if n and n.count(".") <= 2]
        sample = ", ".join(known[-12:])
        raise EvalkitError(
            f"model has no layer {name!r} (pass --layer with one of e.g.: {sample})"
        ) from None


def inner_block_name(model: nn.Module, site: str) -> str | None:
    """``site.<attr>`` when the module at ``site`` is a defense wrapper holding the original block."""
    mod = get_layer(model, site)
    for attr in INNER_ATTRS:
        inner = getattr(mod, attr, None)
        if isinstance(inner, nn.Module) and _is_wrapper(mod):
            return f"{site}.{attr}"
    return None


def _is_wrapper(mod: nn.Module) -> bool:
    return any(
        getattr(mod, flag, False) for flag in ("has_aux_head", "uses_labels", "masks_channels")
    ) or (type(mod).__name__.lower().startswith(("cas", "cifs")))


def default_layer(model: nn.Module) -> str:
    """``model.penultimate``, or the unmasked inner block of the last wrapped site inside it."""
    pen = getattr(model, "penultimate", "") or ""
    if not pen:
        raise EvalkitError("model does not name its penultimate layer; pass --layer NAME")
    sites = [s for s in getattr(model, "block_sites", ()) if s == pen or s.startswith(pen + ".")]
    for site in reversed(sites):
        inner = inner_block_name(model, site)
        if inner is not None:
            return inner
    return pen


@contextmanager
def capture(model: nn.Module, name: str, *, reduce: str = "none") -> Iterator[list[torch.Tensor]]:
    """Record the output of layer ``name`` on every forward inside the block.

    ``reduce="spatial_mean"`` stores (N, C) spatial means instead of full maps (saves memory for
    the channel study); outputs are detached and moved to the CPU.
    """
    if reduce not in ("none", "spatial_mean"):
        raise ValueError(f"reduce must be none or spatial_mean, not {reduce!r}")
    store: list[torch.Tensor] = []
    layer = get_layer(model, name)

    def hook(_mod: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        t = out[0] if isinstance(out, (tuple, list)) else out
        t = t.detach()
        if reduce == "spatial_mean":
            t = spatial_mean(t)
        store.append(t.cpu())

    handle = layer.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def spatial_mean(t: torch.Tensor) -> torch.Tensor:
    """Per-channel spatial mean of an (N, C, H, W) map, or the tensor itself if already (N, C)."""
    if t.ndim == 4:
        return t.mean(dim=(2, 3))
    if t.ndim == 2:
        return t
    raise EvalkitError(
        f"layer output has shape {tuple(t.shape)}; pick a conv layer (N,C,H,W) with --layer"
    )


@torch.no_grad()
def layer_output(
    model: nn.Module, x: torch.Tensor, name: str, *, reduce: str = "none"
) -> torch.Tensor:
    """One forward of ``x`` returning the output of layer ``name`` (eval mode is the caller's)."""
    with capture(model, name, reduce=reduce) as store:
        model(x)
    if not store:
        raise EvalkitError(f"layer {name!r} did not run in the forward pass (pick another --layer)")
    return store[-1]
