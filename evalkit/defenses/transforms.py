"""Test-time defense parts that apply to *any* model after it is loaded.

Input transformations (bit-depth reduction, JPEG, median smoothing: ``bitdepth``, ``jpeg``,
``median``) run in front of the model; ``bpda`` declares some of the model's own submodules
non-differentiable. Both change no weight name, so they are applied after the weights are in:
:func:`split_spec` separates them from the parts a checkpoint loader builds into the
architecture (``sap``, ``cas``, ...), :func:`apply_after_load` applies them to whatever
module was loaded (an evalkit checkpoint, ``file.py:factory``, TorchScript, ...).

Every input transformation is wrapped in :class:`~evalkit.defenses.bpda.BPDA` with the identity
backward (Athalye et al. 2018 broke exactly these with it), so it marks itself
``non_differentiable`` and the harness adds BPDA versions of its gradient attacks.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from evalkit.defenses.bpda import BPDA
from evalkit.defenses.registry import get_plugin
from evalkit.defenses.spec import parse_spec


class InputTransformed(nn.Module):
    """``model(transform(x))``: a test-time input transformation in front of any model."""

    def __init__(self, transform: nn.Module, model: nn.Module) -> None:
        super().__init__()
        self.transform = transform
        self.model = model

    def forward(self, x: torch.Tensor) -> Any:
        return self.model(self.transform(x))


def prepend(model: nn.Module, step: nn.Module) -> nn.Module:
    """``step`` (a non-differentiable input transformation) in front of ``model``, declared
    with the identity backward (BPDA)."""
    return InputTransformed(BPDA(step, "identity"), model)


def split_spec(
    defense: str | None, params: dict[str, Any] | None
) -> tuple[str | None, dict[str, Any], list[str], dict[str, Any]]:
    """``(rest, rest_params, after_load, after_params)``: the SPEC's plugins that a loader
    builds into the architecture (``rest``, None when there are none) and those applied after
    loading to any model (``after_load``), each with the parameters their plugins declare.
    Parameters no after-load plugin declares stay with ``rest``."""
    params = dict(params or {})
    if not defense:
        return None, params, [], {}
    spec = parse_spec(defense)
    after = [n for n in spec.plugins if get_plugin(n).any_model]
    keys = {k for n in after for k in get_plugin(n).defaults}
    rest = [n for n in spec.plugins if n not in after]
    rest_text = "+".join(rest) if rest else None
    if spec.objective != "standard" and rest_text is not None:
        rest_text = f"{spec.objective}+{rest_text}"
    return (
        rest_text,
        {k: v for k, v in params.items() if k not in keys},
        after,
        {k: v for k, v in params.items() if k in keys},
    )


def apply_after_load(model: nn.Module, names: list[str], params: dict[str, Any]) -> nn.Module:
    """Apply the after-load plugins ``names`` in SPEC order (the first one named runs first on
    the input), with their defaults overlaid by ``params``."""
    merged: dict[str, Any] = {}
    for name in names:
        merged.update(get_plugin(name).defaults)
    merged.update(params)
    for name in reversed(names):  # the last wraps innermost, so the first runs first
        model = get_plugin(name).apply(model, merged)
    return model
