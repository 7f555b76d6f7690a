"""Defenses: SPEC parsing, the plugin registry and the label/aux-head context."""

from evalkit.defenses.context import (
    aux_logits,
    has_aux_heads,
    has_bounded_logits,
    is_stochastic,
    label_context,
)
from evalkit.defenses.registry import apply_defenses, extra_losses, get_plugin, plugin_params
from evalkit.defenses.spec import DefenseSpec, parse_spec

__all__ = [
    "DefenseSpec",
    "apply_defenses",
    "aux_logits",
    "extra_losses",
    "get_plugin",
    "has_aux_heads",
    "has_bounded_logits",
    "is_stochastic",
    "label_context",
    "parse_spec",
    "plugin_params",
]
