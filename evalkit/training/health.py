"""Training health of plug-in defenses: does the module work on the model being trained?

A plug-in such as CAS or CIFS can train without an error and still defeat itself. Two failures
seen on evalkit's own small CNN motivate the checks (both invisible in the loss curve):

* **a head becomes the classifier**: an early auxiliary head decides the output (the layers
  after it only decode which mask it chose, and the choice, an argmax, hides the input
  gradient: CAS on a shallow layer), or a head/probe classifies the validation split clearly
  better than the model it feeds (the masked path loses what the probe knows);
* **the output collapses**: the softmax mask shrinks the features so much that the final logits
  barely vary (standard deviation over classes near 0), the classifier never recovers and clean
  accuracy stays far below plain training (AT+CIFS with a weak warm start).

Each epoch the trainer measures on its held-out validation split (clean, and the validation PGD
examples it crafts anyway): the model's accuracy and each head's, the heads' agreement with the
output, how often the attack flips each head's mask selection, the mean normalised entropy of
each mask (1 = selects nothing) and the final logits' spread. :func:`judge` turns one epoch's
measurements into a status (``ok``, ``warning``, ``failed``) with reasons; the checkpoint keeps
the last epoch's (``health``), ``history.csv`` every epoch's numbers, and evaluations and reports
of the checkpoint show a failed training as failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from evalkit.defenses.inspect import Readout, normalized_entropy, selection_changed
from evalkit.evaluation.intervals import paired_difference, wilson

HEAD_MARGIN = 0.05  # a head ahead of the output by more than this (and significantly) fails
HEAD_WARN = 0.02  # ... by more than this (and significantly): a warning
DECIDES = 0.98  # an earlier head agreeing with the output this often (95% lower bound) decides it
LOGIT_STD_MIN = 0.5  # median per-example std of the final logits below this: collapsed output
MASK_ENTROPY_WARN = 0.98  # mean normalised mask entropy above this: the mask selects nothing


class TrainingHealthWarning(UserWarning):
    """A plug-in defense looks like it is defeating itself on the model being trained."""


@dataclass
class Tally:
    """Per-example outcomes collected over the validation batches of one epoch."""

    final_clean: list[bool] = field(default_factory=list)
    final_adv: list[bool] = field(default_factory=list)
    logit_std: list[float] = field(default_factory=list)
    heads: dict[int, dict[str, list[Any]]] = field(default_factory=dict)
    sites: list[str] = field(default_factory=list)

    def _head(self, i: int) -> dict[str, list[Any]]:
        return self.heads.setdefault(
            i, {"clean": [], "adv": [], "agree": [], "flip": [], "entropy": []}
        )

    def add_clean(self, logits: torch.Tensor, y: torch.Tensor, reads: list[Readout]) -> None:
        """Record the clean forward of a batch (final logits, then the heads' readouts)."""
        pred = logits.argmax(1)
        self.final_clean += (pred == y).tolist()
        self.logit_std += logits.float().std(dim=1).tolist()
        self.sites = [r.site for r in reads]
        for i, r in enumerate(reads):
            h = self._head(i)
            head_pred = r.logits.argmax(1)
            h["clean"] += (head_pred == y).tolist()
            h["agree"] += (head_pred == pred).tolist()
            h["entropy"] += normalized_entropy(r.mask).tolist()

    def add_adversarial(
        self,
        logits: torch.Tensor,
        y: torch.Tensor,
        clean_reads: list[Readout],
        adv_reads: list[Readout],
    ) -> None:
        """Record the forward of the batch's validation PGD examples."""
        self.final_adv += (logits.argmax(1) == y).tolist()
        for i, (c, a) in enumerate(zip(clean_reads, adv_reads)):
            h = self._head(i)
            h["adv"] += (a.logits.argmax(1) == y).tolist()
            h["flip"] += selection_changed(c.selection, a.selection).tolist()


def _mean(values: list[Any]) -> float:
    return float(sum(values)) / len(values) if values else float("nan")


def _median(values: list[float]) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else 0.5 * (s[mid - 1] + s[mid])


def metrics(t: Tally) -> dict[str, Any]:
    """The epoch's health numbers, flat (``history.csv`` columns): ``val_logit_std`` and per
    head ``head<i>_clean_acc``, ``head<i>_pgd_acc``, ``head<i>_agreement`` (argmax equal to
    the output's on clean inputs), ``head<i>_selection_flip`` (share of validation points whose
    mask selection the PGD example changed) and ``head<i>_mask_entropy``."""
    row: dict[str, Any] = {"val_logit_std": _median(t.logit_std)}
    for i, h in sorted(t.heads.items()):
        row[f"head{i}_clean_acc"] = _mean(h["clean"])
        row[f"head{i}_pgd_acc"] = _mean(h["adv"])
        row[f"head{i}_agreement"] = _mean(h["agree"])
        row[f"head{i}_selection_flip"] = _mean(h["flip"])
        row[f"head{i}_mask_entropy"] = _mean(h["entropy"])
    return row


def judge(t: Tally) -> dict[str, Any]:
    """Status of one epoch: ``{"status", "reasons", "sites", "thresholds"}``.

    ``failed`` when

    * a head classifies clean or validation-PGD inputs better than the output by more than
      :data:`HEAD_MARGIN` with a paired 95% interval (Newcombe) above 0 (the masked path loses
      what the head knows: CIFS whose softmax mask starves the classifier);
    * a head *before* the last site agrees with the output on at least :data:`DECIDES` of the
      points (Wilson 95% lower bound): the layers after it only decode its selection (CAS on a
      shallow layer);
    * the median spread of the final logits is below :data:`LOGIT_STD_MIN`.

    ``warning`` for a head ahead by more than :data:`HEAD_WARN` (significantly) or a mask whose
    mean normalised entropy exceeds :data:`MASK_ENTROPY_WARN`."""
    reasons: list[str] = []
    failed = False
    spread = _median(t.logit_std)
    if spread == spread and spread < LOGIT_STD_MIN:
        failed = True
        reasons.append(
            f"output collapsed: the final logits' median standard deviation over classes is "
            f"{spread:.3g} (< {LOGIT_STD_MIN}); the classifier barely separates the classes"
        )
    last = max(t.heads, default=-1)
    for i, h in sorted(t.heads.items()):
        site = t.sites[i] if i < len(t.sites) else f"head {i}"
        for kind, own, final in (
            ("clean", h["clean"], t.final_clean),
            ("validation-PGD", h["adv"], t.final_adv),
        ):
            if not own or len(own) != len(final):
                continue
            d, low, _ = paired_difference(own, final)
            if d > HEAD_WARN and low > 0:
                failed = failed or d > HEAD_MARGIN
                reasons.append(
                    f"head at {site} beats the output on {kind} inputs ({100 * _mean(own):.1f}% "
                    f"vs {100 * _mean(final):.1f}%, {100 * d:+.1f} points, 95% lower bound "
                    f"{100 * low:+.1f}): the masked path loses what the head knows"
                )
        agree = h["agree"]
        if i != last and agree and wilson(sum(agree), len(agree))[0] >= DECIDES:
            failed = True
            reasons.append(
                f"head at {site} decides the output ({100 * _mean(agree):.1f}% agreement): the "
                "layers after it only decode which mask it chose, and that argmax hides the "
                "gradient from plain attacks; move the site to the last stage"
            )
        ent = _mean(h["entropy"])
        if ent == ent and ent > MASK_ENTROPY_WARN:
            reasons.append(
                f"mask at {site} is nearly uniform (mean normalised entropy {ent:.3f} > "
                f"{MASK_ENTROPY_WARN}): it selects almost no channels"
            )
    status = "failed" if failed else ("warning" if reasons else "ok")
    return {
        "status": status,
        "reasons": reasons,
        "sites": list(t.sites),
        "thresholds": {
            "head_margin": HEAD_MARGIN,
            "head_warn": HEAD_WARN,
            "decides": DECIDES,
            "logit_std_min": LOGIT_STD_MIN,
            "mask_entropy_warn": MASK_ENTROPY_WARN,
        },
    }
