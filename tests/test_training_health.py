"""Training health of plug-in defenses: the judge's rules on constructed outcomes, and the
trainer recording, warning and passing a failure on to the evaluation."""

from __future__ import annotations

import csv
import warnings

import torch
from helpers import QUIET, one_thread

import evalkit
from evalkit.defenses.inspect import Readout, normalized_entropy
from evalkit.training.health import (
    HEAD_MARGIN,
    LOGIT_STD_MIN,
    Tally,
    TrainingHealthWarning,
    judge,
    metrics,
)


def _tally(head_right: int, final_right: int, n: int = 400, spread: float = 3.0) -> Tally:
    """``n`` points; the head right on the first ``head_right``, the output on the first
    ``final_right``; logits with standard deviation about ``spread``."""
    y = torch.zeros(n, dtype=torch.long)
    final = torch.zeros(n, 4)
    final[:, 0] = spread * 2
    final[final_right:, 0] = -spread * 2
    head = torch.zeros(n, 4)
    head[:head_right, 0] = 1.0
    head[head_right:, 1] = 1.0
    read = Readout("layer4", head, head.argmax(1, keepdim=True), torch.ones(n, 8))
    t = Tally()
    t.add_clean(final, y, [read])
    t.add_adversarial(final, y, [read], [read])
    return t


def test_head_beating_the_output_fails():
    bad = judge(_tally(head_right=360, final_right=300))
    assert bad["status"] == "failed"
    assert any("beats the output" in r for r in bad["reasons"])
    assert bad["sites"] == ["layer4"]
    # within the margin (1 point) is not a failure, even though the head is ahead
    close = judge(_tally(head_right=304, final_right=300))
    assert close["status"] != "failed"
    assert 4 / 400 < HEAD_MARGIN


def test_collapsed_logits_fail_and_uniform_masks_warn():
    collapsed = judge(_tally(300, 300, spread=LOGIT_STD_MIN / 10))
    assert collapsed["status"] == "failed"
    assert any("collapsed" in r for r in collapsed["reasons"])
    # the masks in _tally are all ones: entropy 1 -> a warning, not a failure
    healthy = judge(_tally(300, 300))
    assert healthy["status"] == "warning" and "nearly uniform" in healthy["reasons"][0]
    row = metrics(_tally(300, 300))
    assert row["head0_clean_acc"] == 0.75 and row["head0_agreement"] == 1.0  # both say 1
    assert row["head0_selection_flip"] == 0.0


def test_normalized_entropy_bounds():
    one_hot = torch.zeros(2, 10)
    one_hot[:, 3] = 5.0
    assert torch.allclose(normalized_entropy(one_hot), torch.zeros(2))
    assert torch.allclose(normalized_entropy(-torch.ones(2, 10)), torch.ones(2))


def test_trainer_records_warns_and_the_evaluation_says_failed(tmp_path):
    """A CAS model trained at a learning rate too small to move its classifier: the output's
    logits stay at their initial spread (collapsed), which the trainer must not call healthy."""
    with one_thread(), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ckpt = evalkit.train(
            dataset="fashion-mnist-mini",
            arch="smallcnn",
            defense="at+cas",
            epochs=1,
            out=tmp_path / "m",
            n_train=300,
            val_size=100,
            eps=0.1,
            attack_steps=1,
            width=4,
            lr=1e-6,
            progress=False,
        )
    assert any(issubclass(w.category, TrainingHealthWarning) for w in seen)
    obj = torch.load(ckpt, weights_only=True)
    assert obj["health"]["status"] == "failed" and obj["health"]["epoch"] == 1
    with open(tmp_path / "m" / "history.csv") as fh:
        row = next(csv.DictReader(fh))
    assert {"val_logit_std", "head0_clean_acc", "head0_selection_flip"} <= set(row)
    with one_thread():
        r = evalkit.evaluate(ckpt, eps="0.1", preset="pgd", n=16, sanity=False, **QUIET)
    first = r.summary["flags"][0]
    assert first["id"] == "training_failed" and "collapsed" in first["message"]


def test_an_earlier_head_that_decides_the_output_fails():
    """CAS on a shallow layer: the first of two heads agrees with the output everywhere."""
    n = 400
    y = torch.zeros(n, dtype=torch.long)
    final = torch.zeros(n, 4)
    final[:300, 0] = 6.0
    final[300:, 2] = 6.0
    first = Readout("layer3", final.clone(), final.argmax(1, keepdim=True), torch.rand(n, 8))
    last = Readout("layer4", final.clone(), final.argmax(1, keepdim=True), torch.rand(n, 8))
    t = Tally()
    t.add_clean(final, y, [first, last])
    t.add_adversarial(final, y, [first, last], [first, last])
    verdict = judge(t)
    assert verdict["status"] == "failed"
    decides = [r for r in verdict["reasons"] if "decides the output" in r]
    assert len(decides) == 1 and "layer3" in decides[0]  # the last site may agree: it is the output


def test_cifs_recipe_converges_within_a_margin_of_at(tmp_path):
    """The studies' CIFS recipe on a small problem: natural pre-training, then AT+CIFS from it,
    masks scaled by the channel count. Its clean validation accuracy stays within
    CIFS_MARGIN of plain AT trained the same way, and its training health does not fail; the
    paper's sum-1 masks, trained the same way, starve the output (the trainer says so)."""
    common = dict(
        dataset="fashion-mnist-mini",
        arch="smallcnn",
        n_train=2000,
        val_size=400,
        width=8,
        lr=0.1,
        batch_size=64,
        eps=0.1,
        attack_steps=2,
        progress=False,
    )
    recipe = {"cifs_mask_scale": "channels"}
    with one_thread(), warnings.catch_warnings():
        warnings.simplefilter("ignore", TrainingHealthWarning)
        at = evalkit.train(defense="at", epochs=6, out=tmp_path / "at", **common)
        nat = evalkit.train(defense="cifs", epochs=6, out=tmp_path / "nat", params=recipe, **common)
        cifs = evalkit.train(
            defense="at+cifs",
            epochs=6,
            out=tmp_path / "cifs",
            params=recipe,
            init=str(nat),
            init_min_val_acc=0.6,
            **common,
        )
        paper = evalkit.train(defense="cifs", epochs=6, out=tmp_path / "paper", **common)

    def last(path):
        return torch.load(path, weights_only=True)

    acc_at = last(at)["history"][-1]["val_clean_acc"]
    acc_cifs = last(cifs)["history"][-1]["val_clean_acc"]
    assert acc_cifs >= acc_at - CIFS_MARGIN, (acc_cifs, acc_at)
    assert last(cifs)["health"]["status"] != "failed"
    starved = last(paper)
    assert starved["health"]["status"] == "failed"
    assert any("beats the output" in r for r in starved["health"]["reasons"])
    assert starved["history"][-1]["val_clean_acc"] < last(nat)["history"][-1]["val_clean_acc"]


CIFS_MARGIN = 0.05
