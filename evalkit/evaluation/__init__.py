"""The evaluation harness: run an attack protocol on any model and write a run directory.

``from evalkit.evaluation import evaluate`` (also ``evalkit.evaluate``): see
:func:`evalkit.evaluation.api.evaluate` and docs/protocol.md. The engine that only sees a
model and tensors is :func:`evalkit.evaluation.engine.run_protocol`.
"""

from evalkit.evaluation.api import EvalResult, evaluate
from evalkit.evaluation.budget import Budget, parse_budgets
from evalkit.evaluation.protocol import PRESETS, AttackPlan, Preset, get_preset
from evalkit.evaluation.source import ModelSource

__all__ = [
    "PRESETS",
    "AttackPlan",
    "Budget",
    "EvalResult",
    "ModelSource",
    "Preset",
    "evaluate",
    "get_preset",
    "parse_budgets",
]
