"""Activation-distribution analysis (analysis.distributions): layers, numbers, tables, figures."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from analysis import plots
from analysis.common import ModelEntry
from analysis.distributions import (
    DistributionResult,
    activation_distributions,
    default_layers,
    run_distribution_study,
)
from analysis.hooks import layer_output
from evalkit.data import load_split
from evalkit.defenses import apply_defenses, parse_spec
from evalkit.errors import EvalkitError
from evalkit.models import build_model


def tiny(defense: str = "standard") -> nn.Module:
    torch.manual_seed(0)
    model = build_model("smallcnn", num_classes=10, in_channels=1, width=4)
    return apply_defenses(model, parse_spec(defense)).eval()


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    split = load_split("fashion-mnist-mini", "test").first(12)
    return split.float_batch(slice(None)), split.y


def relu_net() -> nn.Module:
    """1x1 conv with weight 1 then ReLU: layer "1" outputs relu(x) exactly."""
    conv = nn.Conv2d(1, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.weight[1].fill_(-1.0)  # channel 1 = relu(-x): all zeros for x >= 0
    return nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).eval()


def test_default_layers():
    assert default_layers(tiny()) == ["layer3", "layer4"]
    assert default_layers(tiny("at+cas")) == ["layer3", "layer4.block"]  # before the mask
    assert default_layers(tiny(), k=1) == ["layer4"]
    torch.manual_seed(0)
    resnet = build_model("resnet18", num_classes=10, in_channels=3, width=8)
    assert default_layers(resnet) == ["layer3", "layer4"]
    # a model without `penultimate`: the last conv-holding children
    assert default_layers(relu_net(), k=1) == ["0"]
    with pytest.raises(EvalkitError, match="no convolution"):
        default_layers(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))


def test_numbers_match_a_hand_computed_case():
    x = torch.zeros(4, 1, 4, 4)
    x[:, :, :2, :2] = 0.5  # a quarter of the pixels
    x_adv = x + 0.1
    res = activation_distributions(relu_net(), x, x_adv, ["1"], label="relu")
    s = res.summary.set_index(["kind", "stat"])
    nat, adv = s.loc[("natural", "activation")], s.loc[("adversarial", "activation")]
    assert nat["n_total"] == 4 * 2 * 4 * 4
    # channel 0 = x (zero on 3/4), channel 1 = relu(-x) = 0 everywhere
    assert nat["share_zero"] == pytest.approx((0.75 * 16 + 16) / 32)
    assert nat["mean"] == pytest.approx(0.125 / 2)
    assert adv["share_zero"] == pytest.approx(0.5)
    assert adv["mean"] == pytest.approx(0.225 / 2)
    assert nat["share_negative"] == 0.0
    cm = res.table[(res.table.stat == "channel_mean") & (res.table.kind == "adversarial")]
    assert cm["value"].tolist() == pytest.approx([0.225, 0.0])
    assert cm["channel"].tolist() == [0, 1]
    sc = res.scalars()["relu"]["1"]
    assert sc["mean_ratio_adv_over_nat"] == pytest.approx(0.225 / 0.125)


def test_table_summary_and_sampling_on_a_real_model(data):
    x, y = data
    model = tiny()
    x_adv = (x + 0.05 * torch.sign(torch.randn_like(x))).clamp(0, 1)
    res = activation_distributions(
        model, x, x_adv, ["layer2", "layer4"], y=y, max_values=300, label="std"
    )
    assert list(res.table.columns) == ["model", "layer", "kind", "stat", "channel", "value"]
    for col in ("n_total", "n_kept", "mean", "std", "max", "share_zero", "share_negative", "q50"):
        assert col in res.summary.columns
    assert len(res.summary) == 2 * 2 * 2  # layers x kinds x stats
    counts = res.table.groupby(["layer", "kind", "stat"]).size()
    assert counts[("layer2", "natural", "activation")] == 300
    assert counts[("layer4", "adversarial", "channel_mean")] == 16  # 4w channels
    # exact statistics agree with an independent pass through the hook
    with torch.no_grad():
        feat = layer_output(model, x, "layer4")
    row = res.summary.set_index(["layer", "kind", "stat"]).loc[("layer4", "natural", "activation")]
    assert row["n_total"] == feat.numel()
    assert row["share_zero"] == pytest.approx(float((feat == 0).float().mean()))
    assert row["mean"] == pytest.approx(float(feat.mean()), rel=1e-5)
    kept = res.table[
        (res.table.layer == "layer4")
        & (res.table.kind == "natural")
        & (res.table.stat == "activation")
    ]["value"].to_numpy()
    assert np.isin(kept.astype(np.float32), feat.numpy().ravel()).all()  # a subsample of them
    means = res.table[
        (res.table.layer == "layer4")
        & (res.table.kind == "natural")
        & (res.table.stat == "channel_mean")
    ]["value"].to_numpy()
    assert means == pytest.approx(feat.mean(dim=(0, 2, 3)).numpy(), rel=1e-5)
    assert 0 <= res.params["accuracy_natural"] <= 1
    assert not model.training


def test_crafting_and_user_errors(data):
    x, y = data
    model = tiny()
    res = activation_distributions(model, x[:6], None, ["layer4"], y=y[:6], eps=0.1, steps=2)
    assert res.params["attack"] == "PGD-2" and res.params["step_size"] == pytest.approx(0.025)
    assert activation_distributions(model, x, x, "layer2, layer4").params["layers"] == [
        "layer2",
        "layer4",
    ]
    with pytest.raises(EvalkitError, match="x_adv, or y and eps"):
        activation_distributions(model, x, None, ["layer4"])
    with pytest.raises(EvalkitError, match="layer"):
        activation_distributions(model, x, x, ["layer9"])
    with pytest.raises(EvalkitError, match="must match"):
        activation_distributions(model, x, x[:3], ["layer4"])


def test_figures_render_and_use_symlog_for_relu_maps(data):
    x, _ = data
    kw = {"max_values": 500}
    a = activation_distributions(tiny(), x, x.flip(0), ["layer3", "layer4"], label="a", **kw)
    b = activation_distributions(tiny("at+cas"), x, x.flip(0), None, label="b", **kw)
    both = DistributionResult.concat([a, b])
    figs = both.figures()
    assert set(figs) == {"ecdf", "violin"}
    assert len(figs["ecdf"].axes) == 2 * 4  # model rows x (2 layers x 2 statistics)
    assert len(figs["violin"].axes) == 2 * 2  # models x statistics
    assert figs["ecdf"].axes[0].get_xscale() == "symlog"  # activation values: mass at 0
    for fig in figs.values():
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        assert buf.tell() > 1000
    with pytest.raises(EvalkitError, match="repeat"):
        DistributionResult.concat([a, a])
    relu_like = np.r_[np.zeros(600), np.random.default_rng(0).exponential(1.0, 400)]
    assert plots.mass_near_zero(relu_like)
    assert not plots.mass_near_zero(np.random.default_rng(0).uniform(1, 2, 500))


def test_run_distribution_study_writes_the_analysis_folder(data, tmp_path):
    x, y = data
    entries = [ModelEntry("std", tiny()), ModelEntry("cas", tiny("at+cas"))]
    run_distribution_study(
        entries, x[:6], y[:6], tmp_path, eps=0.1, steps=1, max_values=200, show_progress=False
    )
    doc = json.loads((tmp_path / "analysis.json").read_text())
    assert doc["study"] == "distributions"
    assert doc["params"]["layers"] == {
        "std": ["layer3", "layer4"],
        "cas": ["layer3", "layer4.block"],
    }
    assert set(doc["scalars"]["cas"]) == {"layer3", "layer4.block"}
    names = {f["name"] for f in doc["files"]["figures"]}
    assert names == {"ecdf", "violin"}
    for f in doc["files"]["figures"]:
        assert (tmp_path / f["png"]).stat().st_size > 0
    tables = {t["name"] for t in doc["files"]["tables"]}
    assert tables == {"distribution_summary", "channel_means"}
    with np.load(tmp_path / "values_std.npz") as z:
        assert len(z["natural__layer4"]) == 200
