"""The evaluation harness: run an attack protocol on a checkpoint and write a run directory.

``from evalkit.evaluation import evaluate, EvalConfig``; ``evaluate(EvalConfig(ckpt=...,
attacks=[...], eps=[...], n=..., out=..., preset=...))`` returns the summary dict that is also
written to ``out/summary.json`` (schema: ``evalkit/evaluation/README.md``).
"""

from evalkit.evaluation.harness import EvalConfig, evaluate
from evalkit.evaluation.protocol import PRESETS, AttackPlan, Preset, get_preset

__all__ = ["PRESETS", "AttackPlan", "EvalConfig", "Preset", "evaluate", "get_preset"]
