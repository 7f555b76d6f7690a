"""Finding and replacing the submodules a defense wraps, by dotted name.

CAS and CIFS wrap whole blocks (``layer4.0``) or single activations (WRN's ``relu1``); SAP
replaces every ``nn.ReLU``. Doing it by name keeps the architectures free of defense code:
each model only declares ``block_sites`` and the plugins do the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from evalkit.errors import EvalkitError
from evalkit.utils.mode import model_mode


def get_module(root: nn.Module, dotted: str) -> nn.Module:
    """``root.layer4[1]`` for ``"layer4.1"``; a one-line EvalkitError when the name is wrong."""
    try:
        return root.get_submodule(dotted)
    except AttributeError:
        names = ", ".join(n for n, _ in root.named_children())
        raise EvalkitError(
            f"model has no submodule {dotted!r} (top-level modules: {names}); fix the site list"
        ) from None


def set_module(root: nn.Module, dotted: str, new: nn.Module) -> None:
    """Replace the submodule at ``dotted`` by ``new`` (works inside Sequential/ModuleList)."""
    parent_name, _, child = dotted.rpartition(".")
    parent = get_module(root, parent_name) if parent_name else root
    get_module(root, dotted)  # validate before mutating
    setattr(parent, child, new)


def paper_sites(model: nn.Module) -> tuple[str, ...]:
    """Where the papers put CAS/CIFS for this architecture.

    ResNet-18/PreAct: both blocks of ``layer4``; VGG16: the three convs of the last stage;
    AlexNet: ``layer4`` and ``layer5`` (the last two convs, after the last pooling but one);
    smallcnn: ``layer4`` only (a module on its three-conv-deep ``layer3`` becomes the
    classifier; see :class:`evalkit.models.smallcnn.SmallCNN`). WRN (CAS code ``wideresnet_cas.py``): the *input*
    activation of the last block of ``block3`` (its ``relu1`` output) plus the final features
    after the last BN+ReLU (the ``extra_fc`` head), so two heads.
    """
    sites = tuple(getattr(model, "block_sites", ()) or ())
    arch = (getattr(model, "arch_config", {}) or {}).get("arch", "")
    if arch.startswith("wrn") and len(sites) == 1:
        return (f"{sites[0]}.relu1", "relu")
    return sites


def resolve_sites(model: nn.Module, value: Any) -> tuple[str, ...]:
    """Turn a ``*_sites`` param into dotted names.

    ``"auto"`` = the paper placement (:func:`paper_sites`), ``"blocks"`` = ``model.block_sites``
    as declared by the architecture, anything else a comma-separated list of module names.
    """
    if value is None or value == "auto":
        sites = paper_sites(model)
    elif value == "blocks":
        sites = tuple(getattr(model, "block_sites", ()) or ())
    elif isinstance(value, (list, tuple)):
        sites = tuple(str(v) for v in value)
    else:
        sites = tuple(s.strip() for s in str(value).split(",") if s.strip())
    if not sites:
        raise EvalkitError("no CAS/CIFS sites for this model (pass e.g. sites=layer4.0,layer4.1)")
    for s in sites:
        get_module(model, s)
    return sites


def _declared_channels(module: nn.Module) -> int | None:
    """Output channels read from the last conv/BN inside ``module`` (None if it has none)."""
    last: int | None = None
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            last = m.out_channels
        elif isinstance(m, nn.BatchNorm2d):
            last = m.num_features
    return last


def site_channels(model: nn.Module, sites: tuple[str, ...]) -> dict[str, int]:
    """Channel count of each site's output, found with one tiny dry forward.

    A dry run is the only reliable way for parameter-free sites (a ReLU) and blocks whose last
    declared layer is not their output; channel counts do not depend on the spatial size, so a
    1x``C``x32x32 zero input suffices.
    """
    out: dict[str, int] = {}
    hooks = []

    def make_hook(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _inp: Any, output: torch.Tensor) -> None:
            out[name] = int(output.shape[1])

        return hook

    for s in sites:
        hooks.append(get_module(model, s).register_forward_hook(make_hook(s)))
    cfg = getattr(model, "arch_config", {}) or {}
    in_ch = int(cfg.get("in_channels", 3))
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with model_mode(model, False), torch.no_grad():
            model(torch.zeros(1, in_ch, 32, 32, device=device))
    except Exception:  # fall back to what the layers declare
        for s in sites:
            if s not in out:
                ch = _declared_channels(get_module(model, s))
                if ch is not None:
                    out[s] = ch
    finally:
        for h in hooks:
            h.remove()
    missing = [s for s in sites if s not in out]
    if missing:
        raise EvalkitError(f"cannot tell the channel count of site(s) {', '.join(missing)}")
    return out


def num_classes_of(model: nn.Module) -> int:
    """The number of classes the model was built for (aux heads need the same)."""
    cfg = getattr(model, "arch_config", {}) or {}
    if "num_classes" in cfg:
        return int(cfg["num_classes"])
    head = getattr(model, getattr(model, "classifier_name", "linear"), None)
    if isinstance(head, nn.Linear):
        return head.out_features
    raise EvalkitError("cannot tell the model's number of classes (build it with build_model)")


def unmasked_feature_site(model: nn.Module) -> str:
    """Where to hook the last feature map *before* a CAS/CIFS mask (CAS Figures 1-2 hook the
    last block's post-ReLU output before masking). ``model.penultimate`` itself when the model
    has no masking wrapper there."""
    name = str(getattr(model, "penultimate", "") or "")
    wrappers = [
        n
        for n, m in model.named_modules()
        if getattr(m, "has_aux_head", False) and hasattr(m, "block")
    ]
    inside = [n for n in wrappers if not name or n == name or n.startswith(name + ".")]
    if inside:
        return f"{inside[-1]}.block"
    return name
