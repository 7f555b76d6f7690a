"""Tests of the analysis package: hooks, channel statistics, each study's outputs and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.channels import (
    activated,
    activation_counts,
    gini,
    magnitude_activated,
    magnitude_mean,
    magnitude_paper_running,
    normalized_entropy,
    run_channel_study,
    spatial_means,
    spearman,
    tail_channels,
    tail_share,
    tail_share_crossfit,
)
from analysis.common import ModelEntry, craft_adversarial
from analysis.hooks import capture, default_layer, layer_output
from analysis.pooling import change_stats, pooled_features, run_pooling_eval
from evalkit.checkpoint import load_model, save_checkpoint
from evalkit.data import load_split
from evalkit.defenses import apply_defenses, parse_spec
from evalkit.errors import EvalkitError
from evalkit.models import build_model


def tiny(defense: str = "standard", seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model("smallcnn", num_classes=10, in_channels=1, width=kw.pop("width", 4), **kw)
    return apply_defenses(model, parse_spec(defense)).eval()


def save_tiny(path: Path, defense: str = "standard", seed: int = 0, **kw) -> Path:
    model = tiny(defense, seed, **kw)
    save_checkpoint(path, model, dataset="fashion-mnist-mini", input_size=28, defense=defense)
    return path


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    split = load_split("fashion-mnist-mini", "test").first(16)
    return split.float_batch(slice(None)), split.y


# ----------------------------------------------------------------------------- hooks


def test_hook_captures_requested_layer_shape(data):
    x, _ = data
    model = tiny()
    assert layer_output(model, x[:3], "layer4").shape == (
        3,
        16,
        7,
        7,
    )  # width 4 -> 4w channels, 28/4
    assert layer_output(model, x[:3], "layer2").shape == (3, 8, 14, 14)
    torch.manual_seed(0)
    resnet = build_model("resnet18", num_classes=10, in_channels=3, width=8, strides="1122").eval()
    assert layer_output(resnet, torch.rand(2, 3, 32, 32), "layer4").shape == (2, 64, 8, 8)


def test_hook_is_removed_and_unknown_layer_is_a_user_error(data):
    x, _ = data
    model = tiny()
    with capture(model, "layer3") as store:
        model(x[:2])
    model(x[:2])
    assert len(store) == 1
    with pytest.raises(EvalkitError, match="--layer"):
        layer_output(model, x[:2], "layer9")


def test_default_layer_reads_cas_features_before_the_mask(data):
    x, _ = data
    assert default_layer(tiny()) == "layer4"
    model = tiny("at+cas")
    name = default_layer(model)
    assert name == "layer4.block"
    with capture(model, name) as inner, capture(model, "layer4") as outer:
        model(x[:4])
    mask = model.layer4.head.weight[model.layer4.last_index]  # the row CAS multiplied by
    assert torch.allclose(inner[0] * mask[:, :, None, None], outer[0], atol=1e-6)
    assert not torch.allclose(inner[0], outer[0])


# ------------------------------------------------------------------- channel statistics


def test_activated_counts_match_hand_computed_example():
    f = torch.tensor([[1.0, 0.005, 0.02, 0.0], [0.5, 0.5, 0.004, 0.006]])
    # row 0: threshold 0.01 -> channels 0, 2; row 1: threshold 0.005 -> channels 0, 1, 3
    assert activated(f).tolist() == [[True, False, True, False], [True, True, False, True]]
    assert activation_counts(f).tolist() == [2, 1, 1, 1]
    assert torch.allclose(magnitude_mean(f), torch.tensor([0.75, 0.2525, 0.012, 0.003]))
    assert torch.allclose(magnitude_activated(f), torch.tensor([0.75, 0.505, 0.024, 0.006]))
    # the paper code: per-batch sum/count (0 where count is 0), then (mag + new) / 2
    assert torch.allclose(
        magnitude_paper_running(f, batch_size=1), torch.tensor([0.75, 0.25, 0.01, 0.003])
    )
    # a stricter threshold activates fewer channels
    assert activation_counts(f, threshold=0.1).tolist() == [2, 1, 0, 0]


def test_uniformity_measures():
    assert normalized_entropy([5, 5, 5, 5]) == pytest.approx(1.0)
    assert gini([5, 5, 5, 5]) == pytest.approx(0.0)
    assert normalized_entropy([0, 0, 9, 0]) == pytest.approx(0.0)
    assert gini([0, 0, 9, 0]) == pytest.approx(0.75)
    assert normalized_entropy([1, 2, 3, 4]) < 1.0
    assert 0 < gini([1, 2, 3, 4]) < 0.75


def test_tail_share_sees_the_paper_signature_that_entropy_misses():
    """Natural counts concentrated on the first half of the channels, adversarial counts
    flatter and larger on the tail (CAS Figure 2): entropy ~0.99 for both, tail_share clearly
    positive; identical distributions give 0."""
    c = 64
    nat = np.r_[np.full(c // 2, 100.0), np.full(c // 2, 60.0)]
    adv = np.r_[np.full(c // 2, 90.0), np.full(c // 2, 85.0)]
    e_nat, e_adv = normalized_entropy(nat), normalized_entropy(adv)
    assert e_nat > 0.99 and e_adv > 0.99 and abs(e_adv - e_nat) < 0.01
    # tail = the 32 channels natural images use least: 85/175 of adversarial vs 60/160 natural
    assert tail_share(nat, adv) == pytest.approx(85 / 175 - 60 / 160)
    assert tail_share(nat, adv) > 0.1
    assert tail_share(nat, nat) == 0.0
    assert tail_share(nat, nat * 3) == pytest.approx(0.0)
    # the order is kept, so the rank correlation stays 1: it measures a different thing
    assert spearman(nat, adv) == pytest.approx(1.0)
    assert spearman(nat, nat[::-1]) == pytest.approx(-1.0)
    assert tail_channels(nat).tolist() == [False] * 32 + [True] * 32
    with pytest.raises(ValueError):
        tail_share(nat, adv[:-1])


def test_tail_share_crossfit_is_unbiased_under_no_effect():
    rng = np.random.default_rng(0)
    n, c = 400, 32
    p = np.linspace(0.2, 0.8, c)  # channels differ in how often they are active
    nat = (rng.random((n, c)) < p).astype(float)
    adv = (rng.random((n, c)) < p).astype(float)  # same distribution, independent draws
    naive = tail_share(nat.sum(0), adv.sum(0))
    fit = float(tail_share_crossfit(nat, adv)[0])
    assert abs(fit) < 0.01
    # the same counts for ranking and measuring favour a positive value (noise picks the tail)
    flat = (rng.random((n, c)) < 0.5).astype(float), (rng.random((n, c)) < 0.5).astype(float)
    assert tail_share(flat[0].sum(0), flat[1].sum(0)) > abs(float(tail_share_crossfit(*flat)[0]))
    assert naive > -0.01
    # a real shift onto the tail is seen; weights give one value per row
    shifted = (rng.random((n, c)) < p[::-1] * 0.5 + 0.25).astype(float)
    assert float(tail_share_crossfit(nat, shifted)[0]) > 0.05
    assert tail_share_crossfit(nat, adv, weights=np.ones((3, n))).shape == (3,)


def test_adversarial_examples_stay_in_the_ball(data):
    x, y = data
    model = tiny("at+cas")
    adv = craft_adversarial(model, x, y, 8 / 255, steps=3, step_size=0.003, show_progress=False)
    assert (adv - x).abs().max() <= 8 / 255 + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    assert not model.training


def _check_outputs(out: Path, study: str) -> dict:
    doc = json.loads((out / "analysis.json").read_text())
    assert doc["study"] == study and doc["schema"] == "evalkit-analysis/1"
    assert doc["finding"] and isinstance(doc["finding"], str)
    files = doc["files"]
    assert files["figures"] and files["tables"]
    for fig in files["figures"]:
        assert (out / fig["png"]).stat().st_size > 0 and (out / fig["svg"]).stat().st_size > 0
    for tab in files["tables"]:
        assert (out / tab["csv"]).exists() and (out / tab["parquet"]).exists()
    return doc


def test_channel_study_writes_files_and_scalars(tmp_path, data):
    x, y = data
    entries = [ModelEntry("std", tiny(seed=1)), ModelEntry("cas", tiny("at+cas", seed=2))]
    scalars = run_channel_study(entries, x, y, tmp_path, eps=8 / 255, steps=2, show_progress=False)
    doc = _check_outputs(tmp_path, "channels")
    assert set(doc["scalars"]) == {"std", "cas"}
    assert doc["params"]["layer"] == {"std": "layer4", "cas": "layer4.block"}
    assert doc["params"]["loss"] == {"std": "ce", "cas": "joint_ce"}
    names = {f["name"] for f in doc["files"]["figures"]}
    assert {"comparison", "scalars", "magnitude_std", "frequency_cas"} <= names
    table = pd_read(tmp_path / "channels.parquet")
    std = table[table.model == "std"]
    # the table's natural magnitude is the mean of the stored per-example spatial means
    feats = np.load(tmp_path / "features_std.npz")
    assert np.allclose(std["magnitude_natural"].to_numpy(), feats["natural"].mean(0), atol=1e-6)
    assert np.allclose(
        feats["natural"], spatial_means(entries[0].model, x, "layer4").numpy(), atol=1e-6
    )
    assert scalars["std"]["mean_magnitude_natural"] == pytest.approx(
        float(feats["natural"].mean()), rel=1e-5
    )


def pd_read(path: Path):
    import pandas as pd

    return pd.read_parquet(path)


# --------------------------------------------------------------------- other studies


def test_importance_study_on_cifs(tmp_path, data):
    from analysis.importance import collect_masks, run_importance_study

    x, y = data
    model = tiny("at+cifs")
    masks = collect_masks(model, x[:5])
    assert set(masks) == {"layer4"}  # smallcnn's one CIFS site
    assert torch.allclose(masks["layer4"].sum(1), torch.ones(5), atol=1e-5)
    run_importance_study(
        [ModelEntry("cifs", model)], x, y, tmp_path, eps=8 / 255, steps=2, show_progress=False
    )
    doc = _check_outputs(tmp_path, "importance")
    mods = doc["scalars"]["cifs"]["modules"]
    assert set(mods) == {"layer4"} and 0 <= mods["layer4"]["entropy_natural"] <= 1
    with pytest.raises(EvalkitError, match="cifs"):
        collect_masks(tiny(), x[:2])


def test_pooled_change_of_a_local_perturbation_shrinks_with_map_size():
    for size in (2, 4, 8):
        nat = torch.zeros(1, 3, size, size)
        adv = nat.clone()
        adv[0, 0, 0, 0] = 1.0  # one location, one channel
        s = change_stats(nat, adv, nat.mean((2, 3)), adv.mean((2, 3)))  # average pooling
        assert s["pooled_change"] == pytest.approx(1 / size**2)
        assert s["map_change_max_location"] == pytest.approx(1.0)
        m = change_stats(nat, adv, nat.amax((2, 3)), adv.amax((2, 3)))  # max pooling passes it on
        assert m["pooled_change"] == pytest.approx(1.0)


def test_pooling_eval_records_map_size_and_pool(tmp_path, data):
    x, y = data
    entries = [
        ModelEntry("avg7", tiny(pool="avg")),
        ModelEntry("max4", tiny(pool="max", strides="1222")),
    ]
    maps, pooled = pooled_features(entries[1].model, x[:3])
    assert maps.shape[-2:] == (4, 4) and torch.allclose(pooled, maps.amax((2, 3)))
    df = run_pooling_eval(entries, x, y, tmp_path, eps=8 / 255, steps=2, show_progress=False)
    _check_outputs(tmp_path, "pooling")
    got = {r.model: (r.pool, r.map_size) for r in df.itertuples()}
    assert got == {"avg7": ("avg", 7), "max4": ("max", 4)}


def test_sap_eot_study(tmp_path, data):
    from analysis.sap_eot import run_sap_eot_study
    from evalkit.evaluation.budget import parse_budgets

    x, y = data
    ckpt = save_tiny(tmp_path / "m.pt")
    dense, meta = load_model(ckpt)
    sap, _ = load_model(ckpt, defense="sap")
    path = run_sap_eot_study(
        [(str(ckpt), dense, sap, meta)],
        x[:6],
        y[:6],
        tmp_path / "out",
        eps_list=parse_budgets("8/255", "linf"),
        eot=[1, 2],
        steps=1,
        eval_samples=1,
        show_progress=False,
    )
    doc = _check_outputs(path.parent, "sap-eot")
    table = pd_read(path.parent / "sap_eot.parquet")
    assert sorted(table[table.model == "sap"]["eot"]) == [1, 2]
    assert table[table.model == "dense"]["robust_accuracy"].nunique() == 1
    assert set(doc["scalars"]["m"]["robust_accuracy_sap_by_eot"]) == {"1", "2"}


# ------------------------------------------------------------------------------- CLI


def test_cli_channels_and_errors(tmp_path, capsys):
    from evalkit.cli import main

    a = save_tiny(tmp_path / "a.pt", seed=1)
    b = save_tiny(tmp_path / "b.pt", "at+cas", seed=2)
    out = tmp_path / "an"
    rc = main(
        [
            "analyze",
            "--ckpt",
            str(b),
            "--study",
            "channels",
            "--class",
            "3",
            "--n",
            "8",
            "--steps",
            "2",
            "--sort",
            "natural",
            "--out",
            str(out),
            "--quiet",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    doc = json.loads((out / "analysis.json").read_text())
    assert doc["params"]["class"] == 3 and doc["params"]["n_examples"] == 8
    assert [m["label"] for m in doc["models"]] == ["b"]
    assert (np.load(out / "features_b.npz")["labels"] == 3).all()
    assert "mean magnitude natural" in capsys.readouterr().out
    rc = main(
        [
            "analyze",
            "--ckpt",
            str(a),
            "--study",
            "importance",
            "--n",
            "4",
            "--out",
            str(tmp_path / "x"),
            "--quiet",
            "--device",
            "cpu",
        ]
    )
    assert rc == 2 and "cifs" in capsys.readouterr().err
    rc = main(
        [
            "analyze",
            "--ckpt",
            str(a),
            "--study",
            "channels",
            "--layer",
            "nope",
            "--n",
            "4",
            "--out",
            str(tmp_path / "y"),
            "--quiet",
            "--device",
            "cpu",
        ]
    )
    assert rc == 2 and "--layer" in capsys.readouterr().err


@pytest.mark.slow
def test_pooling_grid_trains_both_pool_types_and_is_analysed(tmp_path):
    """The pooling study end to end through the API (trainer grid + analysis), 2 map sizes."""
    import evalkit
    from evalkit.pipelines.pooling import train_pooling_grid

    out = tmp_path / "pool"
    ckpts = train_pooling_grid(
        "1222,1221@2",
        out=tmp_path / "models",
        epochs=1,
        n_train=300,
        attack_steps=2,
        device="cpu",
        progress=False,
    )
    evalkit.analyze(
        {k: str(v) for k, v in ckpts.items()},
        analysis="pooling",
        data="fashion-mnist-mini",
        n=64,
        eps=8 / 255,
        steps=3,
        out=out,
        progress=False,
        device="cpu",
    )
    doc = _check_outputs(out, "pooling")
    table = pd_read(out / "pooling.parquet")
    assert set(zip(table["pool"], table["map_size"])) == {
        ("avg", 4),
        ("avg", 14),
        ("max", 4),
        ("max", 14),
    }
    assert (tmp_path / "models" / "max-1221-up2" / "checkpoint.pt").exists()
    assert "avg pool" in doc["finding"] and "max pool" in doc["finding"]
