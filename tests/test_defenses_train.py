"""End to end: ``evalkit train --defense SPEC`` for every seed-defense SPEC on the bundled data,
then the checkpoint rebuilds the same defended model (one tiny epoch each)."""

from __future__ import annotations

import pytest
import torch

from evalkit.checkpoint import load_model
from evalkit.cli import main
from evalkit.data import load_split
from evalkit.defenses import (
    aux_logits,
    has_aux_heads,
    has_bounded_logits,
    is_stochastic,
    label_context,
)
from evalkit.defenses.cas import CASBlock
from evalkit.defenses.cifs import CIFSBlock
from evalkit.defenses.he import CosineHead

FAST = [
    "--dataset",
    "fashion-mnist-mini",
    "--arch",
    "smallcnn",
    "--width",
    "4",
    "--n-train",
    "96",
    "--batch-size",
    "48",
    "--val-size",
    "24",
    "--epochs",
    "1",
    "--attack-steps",
    "2",
    "--quiet",
]

SPECS = ["at+cas", "trades+cas", "mart+cas", "at+cifs", "at+he", "trades+he", "at+rcm"]


def _train(spec: str, out, *extra: str) -> torch.nn.Module:
    assert main(["train", "--defense", spec, "--out", str(out), *FAST, *extra]) == 0
    assert (out / "checkpoint.pt").exists() and (out / "history.csv").exists()
    return out / "checkpoint.pt"


@pytest.fixture(scope="module")
def test_batch() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_split("fashion-mnist-mini", "test").first(16)
    return data.float_batch(slice(0, 16)), torch.as_tensor(data.y[:16])


@pytest.mark.parametrize("spec", SPECS)
def test_train_each_spec_and_reload(spec: str, tmp_path, test_batch) -> None:
    path = _train(spec, tmp_path)
    model, meta = load_model(path)
    assert meta.defense == spec
    assert not model.training
    x, y = test_batch
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (16, 10) and torch.isfinite(logits).all()
    if "cas" in spec:
        assert isinstance(model.layer4, CASBlock) and not isinstance(model.layer3, CASBlock)
        assert meta.defense_params["cas_beta"] == 2.0
        assert has_aux_heads(model) and len(aux_logits(model)) == 1
    if "cifs" in spec:
        assert isinstance(model.layer4, CIFSBlock) and has_aux_heads(model)
    if "he" in spec:
        assert isinstance(model.linear, CosineHead) and has_bounded_logits(model)
        assert logits.abs().max() <= meta.defense_params["he_s"] + 1e-4
    if "rcm" in spec:
        assert model.upsample.factor == 2 and meta.defense_params["rcm_upsample"] == 2
    # the loaded model is the honest test-time model: labels given at eval change nothing
    with torch.no_grad(), label_context(model, (y + 3) % 10):
        torch.testing.assert_close(model(x), logits, rtol=0, atol=0)
    # the stored weights are the trained ones (a second load agrees exactly)
    again, _ = load_model(path)
    with torch.no_grad():
        torch.testing.assert_close(again(x), logits, rtol=0, atol=0)


def test_trained_checkpoint_gets_sap_at_load(tmp_path, test_batch) -> None:
    path = _train("at", tmp_path)
    model, meta = load_model(path, defense="sap")
    assert meta.defense == "at+sap" and is_stochastic(model)
    x, _ = test_batch
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))


def test_training_with_sap_is_refused(tmp_path, capsys) -> None:
    assert main(["train", "--defense", "at+sap", "--out", str(tmp_path), *FAST]) == 2
    assert "test-time" in capsys.readouterr().err


def test_defense_params_from_the_command_line(tmp_path) -> None:
    path = _train("at+he", tmp_path, "--param", "he_s=15", "--param", "he_m=0.3")
    model, meta = load_model(path)
    assert meta.defense_params["he_s"] == 15 and meta.defense_params["he_m"] == 0.3
    assert model.linear.s == 15.0
