"""evalkit: train adversarially robust image classifiers, attack them, explain the outcome.

Model contract everywhere: ``model(x) -> logits`` with ``x`` in [0, 1], NCHW float;
normalization lives inside the model so an eps means the same for every checkpoint.

The public API is imported lazily (PEP 562), so ``import evalkit`` stays cheap and the
package's own modules never import each other through this file:

* :func:`evalkit.evaluate` — the robustness protocol on any ``nn.Module`` and data;
* :func:`evalkit.train` — train a model with any defense;
* :func:`evalkit.analyze` — the papers' analyses (channels, importance, pooling, ...);
* :func:`evalkit.report` — HTML/PDF report from run and analysis directories;
* :func:`evalkit.wrap` — give a model with its own preprocessing or outputs the contract;
* :func:`evalkit.bpda` — declare a non-differentiable step and its backward approximation
  (BPDA), :func:`evalkit.reparameterize` — the same for a deep iterative preprocessing.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "evaluate": ("evalkit.evaluation.api", "evaluate"),
    "EvalResult": ("evalkit.evaluation.api", "EvalResult"),
    "ModelSource": ("evalkit.evaluation.source", "ModelSource"),
    "train": ("evalkit.training.api", "train"),
    "analyze": ("evalkit.analyses", "analyze"),
    "report": ("evalkit.reporting", "report"),
    "wrap": ("evalkit.models.wrap", "wrap"),
    "bpda": ("evalkit.defenses.bpda", "bpda"),
    "reparameterize": ("evalkit.defenses.bpda", "reparameterize"),
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        module, attr = _API[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'evalkit' has no attribute {name!r}")
