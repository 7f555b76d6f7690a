"""evalkit: train adversarially robust image classifiers, attack them, explain the outcome.

Model contract everywhere: ``model(x) -> logits`` with ``x`` in [0, 1], NCHW float;
normalization lives inside the model so an eps means the same for every checkpoint.
"""

__version__ = "0.1.0"
