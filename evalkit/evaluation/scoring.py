"""Scoring a candidate input: the probability that the model classifies it correctly.

A deterministic model gets one forward pass and an exact 0/1 score. A randomized model (SAP,
noise, dropout left on) gets ``draws`` forward passes and the Monte-Carlo estimate
``p = (#correct draws) / draws`` per point, whose standard error is ``sqrt(p (1 - p) / draws)``.
A point's robust score is then the minimum of ``p`` over its clean input and every adversarial
candidate any attack produced (see :mod:`evalkit.evaluation.summary`): one draw is never enough to
call a randomized point robust, because the next draw may be the one the attack won.

Logits that are NaN or infinite never count as correct (``argmax`` of NaN logits is class 0,
which would otherwise score every class-0 point as correct).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass
class Scores:
    """Per-point outcome of ``draws`` forward passes; all tensors have shape ``(N,)``."""

    p_correct: torch.Tensor  # float in [0, 1]
    pred: torch.Tensor  # long: the most frequent prediction over the draws
    margin: torch.Tensor  # float: z_y - max_{j != y} z_j of the mean finite logits (NaN if none)
    nonfinite: torch.Tensor  # bool: some draw gave NaN/inf logits
    draws: int


def margins(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``z_y - max_{j != y} z_j`` per row of ``logits`` (N, K): positive when correct."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, y[:, None], float("-inf"))
    return true - other.max(1).values


@torch.no_grad()
def score(model: nn.Module, x: torch.Tensor, y: torch.Tensor, draws: int = 1) -> Scores:
    """Score ``x`` (N, C, H, W) with labels ``y`` (N,) over ``draws`` forward passes.

    Uses the global RNG for the model's own randomness; the caller seeds it.
    """
    n = x.shape[0]
    draws = max(int(draws), 1)
    correct = torch.zeros(n, dtype=torch.float64, device=x.device)
    bad = torch.zeros(n, dtype=torch.bool, device=x.device)
    total: torch.Tensor | None = None
    votes: torch.Tensor | None = None
    for _ in range(draws):
        logits = model(x).float()
        finite = torch.isfinite(logits).all(1)
        pred = logits.argmax(1)
        correct += ((pred == y) & finite).double()
        bad |= ~finite
        safe = torch.where(finite[:, None], logits, torch.zeros_like(logits))
        total = safe if total is None else total + safe
        onehot = torch.zeros_like(logits).scatter_(1, pred[:, None], 1.0) * finite[:, None]
        votes = onehot if votes is None else votes + onehot
    assert total is not None and votes is not None
    mean_logits = total / draws
    margin = margins(mean_logits, y)
    margin = torch.where(bad, torch.full_like(margin, float("nan")), margin)
    pred = torch.where(bad & (votes.sum(1) == 0), torch.full_like(y, -2), votes.argmax(1))
    return Scores((correct / draws).float(), pred, margin, bad, draws)


def mc_standard_error(p: torch.Tensor | list[float], draws: int) -> float:
    """Standard error of the mean of per-point Monte-Carlo estimates ``p`` from ``draws`` draws
    each (the draws are independent across points): ``sqrt(sum p(1-p)/draws) / n``."""
    t = torch.as_tensor(p, dtype=torch.float64)
    if t.numel() == 0 or draws <= 1:
        return 0.0
    return float((t * (1 - t) / draws).sum().sqrt() / t.numel())
