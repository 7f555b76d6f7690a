"""Plugin registry: each plugin is a model transform plus optional extra training loss.

Plugin modules (``cas``, ``cifs``, ``he``, ``sap``, ``rcm``, ``bitdepth``, ``jpeg``,
``median``, ``bpda``) call :func:`register` at import;
:func:`apply_defenses` imports them lazily so the registry is always complete.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from evalkit.defenses.spec import PLUGINS, REGISTERED, DefenseSpec
from evalkit.errors import EvalkitError

# extra_loss(model, logits, y, params) -> scalar tensor added to the objective's loss; called
# right after a forward of the examples the loss is taken on, inside label_context.
ExtraLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor, dict[str, Any]], torch.Tensor]


@dataclass
class Plugin:
    name: str
    apply: Callable[[nn.Module, dict[str, Any]], nn.Module]
    extra_loss: ExtraLoss | None = None
    # margin_logits(logits, y, params) -> logits used in the *training* CE (HE's additive margin)
    margin_logits: Callable[[torch.Tensor, torch.Tensor, dict[str, Any]], torch.Tensor] | None = (
        None
    )
    test_time_only: bool = False  # e.g. SAP: applied to any checkpoint, never trained with
    # applied after loading, to any model (evalkit's or not): input transformations in front of
    # it and BPDA declarations (evalkit/defenses/transforms.py); changes no weight names
    any_model: bool = False
    defaults: dict[str, Any] = field(default_factory=dict)
    summary: str = ""


_REGISTRY: dict[str, Plugin] = {}


def register(plugin: Plugin) -> Plugin:
    """Make ``plugin`` usable in SPECs (``at+NAME``), by the trainer and the harness."""
    _REGISTRY[plugin.name] = plugin
    REGISTERED.add(plugin.name)
    return plugin


def get_plugin(name: str) -> Plugin:
    if name not in _REGISTRY:
        try:
            importlib.import_module(f"evalkit.defenses.{name}")
        except ModuleNotFoundError:
            pass
    if name not in _REGISTRY:
        raise EvalkitError(
            f"defense plugin {name!r} is not available (known: {', '.join(PLUGINS)})"
        )
    return _REGISTRY[name]


def plugin_params(spec: DefenseSpec) -> dict[str, Any]:
    """Defaults of every plugin in ``spec`` overlaid with the spec's own params."""
    params: dict[str, Any] = {}
    for name in spec.plugins:
        params.update(get_plugin(name).defaults)
    params.update(spec.params)
    return params


def apply_defenses(model: nn.Module, spec: DefenseSpec) -> nn.Module:
    """Transform ``model`` for every plugin of ``spec`` (in place where possible)."""
    params = plugin_params(spec)
    for name in spec.plugins:
        model = get_plugin(name).apply(model, params)
    model.defense_spec = str(spec)  # type: ignore[assignment]
    return model


def margin_transforms(spec: DefenseSpec) -> list[Callable[..., torch.Tensor]]:
    """Logit transforms applied before the training CE (e.g. HE's margin)."""
    return [
        p.margin_logits
        for p in (get_plugin(n) for n in spec.plugins)
        if p.margin_logits is not None
    ]


def extra_losses(spec: DefenseSpec) -> list[ExtraLoss]:
    """The extra training losses the spec's plugins add."""
    return [p.extra_loss for p in (get_plugin(n) for n in spec.plugins) if p.extra_loss is not None]
