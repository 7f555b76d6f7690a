"""``evalkit.evaluate`` end to end on models built for one question each (issue 10's list):
every break counts (an intermediate PGD iterate; a point only the Square probe breaks), explicit
attack lists name the adaptive attacks they leave out, the checks stay within their budget,
unfinished training runs are flagged, and CIFS is attacked through its mask."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn
from helpers import QUIET, one_line, one_thread, run_cli
from torch.utils.data import DataLoader, TensorDataset

import evalkit
from evalkit.attacks.pgd import pgd
from evalkit.data import load_split
from evalkit.evaluation import evaluate

EPS = 8 / 255


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------- the API


def test_top_level_evaluate_is_the_api():
    from evalkit.evaluation.api import evaluate as api_evaluate

    assert evalkit.evaluate is api_evaluate is evaluate


def test_any_module_and_any_data_form_give_the_same_numbers(atk_model, tmp_path):
    """A module defined outside evalkit's registry; (x, y) uint8 or float, a DataLoader and a
    .npz file give the same per-example results; out=None writes nothing."""
    import numpy as np

    split = load_split("fashion-mnist-mini", "test").first(24)
    kw = dict(attacks="fgsm,pgd", eps="4/255", batch_size=8, sanity=False, seed=2, **QUIET)
    as_uint8 = evaluate(atk_model, (split.x, split.y), **kw)
    x = split.x.float() / 255
    as_float = evaluate(atk_model, (x, split.y), **kw)
    loader = DataLoader(TensorDataset(x, split.y), batch_size=5)
    as_loader = evaluate(atk_model, loader, **kw)
    np.savez(tmp_path / "d.npz", x=split.x.numpy(), y=split.y.numpy())
    as_file = evaluate(atk_model, tmp_path / "d.npz", **kw)
    cols = ["clean_pred", "clean_p", "pgd-20@4/255:p", "worst@4/255:score"]
    for other in (as_float, as_loader, as_file):
        assert other.examples[cols].equals(as_uint8.examples[cols])
    assert as_uint8.run_dir is None and list(tmp_path.iterdir()) == [tmp_path / "d.npz"]
    assert as_uint8.summary["model"]["source"] == "python module"
    assert as_file.summary["data"]["source"] == str(tmp_path / "d.npz")


def test_run_directory_from_python_matches_the_summary(atk_model, atk_data, tmp_path):
    import pandas as pd

    x, y = atk_data
    out = tmp_path / "run"
    result = evaluate(atk_model, (x[:16], y[:16]), attacks="fgsm", out=out, sanity=False, **QUIET)
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(result.summary))
    assert len(pd.read_parquet(out / "examples.parquet")) == 16
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_sha256"] == result.fingerprints["model_sha256"]
    assert cfg["checkpoint_sha256"] is None  # a Python module has no file


# ------------------------------------------------------- every break counts: PGD


class Band(nn.Module):
    """Two classes, read from one pixel t = x[:, 0, 0, 0]: z0 = 0, z1 = 1 - |t - c| / w with
    c = 0.5 + 4/255 and w = 1.5/255, so class 1 wins only for |t - c| < w. The input gradient
    of z1 is +1 (straight-through), so CE ascent on y = 0 moves t up by one step per iteration.
    From t = 0.5 with steps of 0.8/255 inside the eps = 8/255 ball, the iterates 4, 5, 6
    (t - 0.5 = 3.2, 4.0, 4.8 /255) are misclassified, and the last (8/255, clamped) is not."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x[:, :1, 0, 0]
        band = 1 - (t - (0.5 + 4 / 255)).abs() / (1.5 / 255)
        return torch.cat([torch.zeros_like(t), t + (band - t).detach()], 1)


def _band_data() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.full((8, 1, 4, 4), 0.3)
    x[:4, 0, 0, 0] = 0.5  # reach the band mid-run
    x[4:, 0, 0, 0] = 0.2  # never reach it
    return x, torch.zeros(8, dtype=torch.long)


def test_a_point_only_an_intermediate_pgd_iterate_breaks_counts_as_broken():
    model = Band()
    x, y = _band_data()
    # the construction: plain PGD's last iterate is correct again, so last-iterate scoring
    # would call every point robust
    last = pgd(model, x, y, EPS, steps=20, step_size=0.8 / 255, random_start=False)
    assert (model(last).argmax(1) == 0).all()
    # PGD-20, step 0.8/255, no random start: the paper-cifs preset's PGD, through the harness
    result = evaluate(
        model, (x, y), preset="paper-cifs", attacks="pgd", eps="8/255", sanity=False, **QUIET
    )
    df, summary = result.examples, result.summary
    assert summary["clean_accuracy"] == 1.0
    assert df["pgd-20@8/255:pred"].tolist() == [1] * 4 + [0] * 4
    assert df["worst@8/255:robust"].tolist() == [False] * 4 + [True] * 4
    assert df["worst@8/255:broken_by"].tolist() == ["pgd-20"] * 4 + [""] * 4
    # the kept iterate is inside the band, well short of the ball's edge
    assert (df.loc[:3, "pgd-20@8/255:norm"] < 5.6 / 255).all()
    assert (df.loc[:3, "pgd-20@8/255:margin"] < 0).all()
    assert summary["worst_case"][0]["robust_accuracy"] == 0.5


# ---------------------------------------------- every break counts: the Square probe


class MeanDetached(nn.Module):
    """Two classes from the summed pixel offset s = sum(x - 0.5): logits (-s/2, s/2). The
    logits are detached (input gradient exactly 0), so FGSM and PGD cannot move; a random
    start shifts s by ~eps*sqrt(D/3) (D pixels), far less than the margins below, while a
    score-based search (Square) can shift it by up to eps*D."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x - 0.5).flatten(1).sum(1, keepdim=True).detach()
        return torch.cat([-s, s], 1) / 2 + 0.0 * x.flatten(1).sum(1, keepdim=True)


def _mean_data(n: int = 64, side: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    d = side * side
    margin = torch.linspace(0.4, 0.6, n) * EPS * d  # |s| at the clean point: 0.4..0.6 eps*D
    sign = torch.tensor([-1.0, 1.0]).repeat(n // 2)
    noise = (torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(0)) - 0.5) / 50
    noise = noise - noise.flatten(1).mean(1).view(-1, 1, 1, 1)
    x = 0.5 + noise + (sign * margin / d).view(-1, 1, 1, 1)
    return x, (sign > 0).long()


def test_a_point_only_square_breaks_is_in_the_worst_case():
    x, y = _mean_data()
    result = evaluate(
        MeanDetached(), (x, y), attacks="fgsm,pgd", eps="8/255", seed=0, shattered="run", **QUIET
    )
    summary, df = result.summary, result.examples
    assert summary["clean_accuracy"] == 1.0
    white = {r["attack"]: r for r in summary["results"] if not r["probe"]}
    assert white["fgsm"]["n_broken"] == 0 and white["pgd-20"]["n_broken"] == 0
    probe = [r for r in summary["results"] if r["probe"]]
    assert [r["attack"] for r in probe] == ["square-probe"]
    broken = probe[0]["n_broken"]
    assert broken > 0
    by_square = df["worst@8/255:broken_by"] == "square-probe"
    assert int(by_square.sum()) == broken
    assert (df.loc[by_square, "pgd-20@8/255:p"] == 1).all()  # white-box survivors
    assert (df.loc[by_square, "square-probe@8/255:norm"] <= EPS + 1e-6).all()
    worst = summary["worst_case"][0]
    assert worst["n_robust"] == 64 - broken and worst["broken_by"] == {"square-probe": broken}
    assert worst["robust_accuracy"] == pytest.approx((64 - broken) / 64)
    assert any(f["id"] == "black_box_beats_white_box" for f in summary["flags"])


# ------------------------------------------------ explicit lists and adaptive attacks


def test_sap_with_an_explicit_pgd_runs_eot_pgd_only_and_names_what_it_left_out(
    ev_ckpt, tmp_path, capsys
):
    out = tmp_path / "run"
    argv = ["attack", "--ckpt", ev_ckpt, "--defense", "sap", "--attacks", "pgd", "--n", "16"]
    rc, err = run_cli([*argv, "--out", str(out), "--no-progress", "--device", "cpu"], capsys)
    assert rc == 0, err
    summary = json.loads((out / "summary.json").read_text())
    ran = [r for r in summary["results"] if not r["probe"]]
    assert [r["attack"] for r in ran] == ["pgd-20"]
    assert ran[0]["eot"] == 20 and ran[0]["n_attacked"] > 0
    assert [p["id"] for p in summary["protocol"]["attacks"]] == ["pgd-20"]
    assert not any(r["attack"].startswith("autoattack") for r in summary["results"])
    left = [a for a in summary["adaptive"] if a.get("left_out")]
    assert left and any("AutoAttack" in " ".join(a["left_out"]) for a in left)
    assert all(a["attacks"] == [] for a in left)  # nothing claims to have run
    assert any(f["id"] == "adaptive_attack_left_out" for f in summary["flags"])
    assert summary["scoring"]["semantics"] == "monte-carlo"


def test_defense_parameters_reach_the_defense(ev_ckpt, tmp_path, capsys):
    """--param k=v / params= set defense parameters (a bad value is the defense's own error)."""
    argv = ["attack", "--ckpt", ev_ckpt, "--defense", "sap", "--param", "sap_frac=0"]
    rc, err = run_cli([*argv, "--out", str(tmp_path / "r"), "--device", "cpu"], capsys)
    assert rc == 2 and "sap_frac" in err and one_line(err), err
    from evalkit.checkpoint import load_model

    model, _ = load_model(ev_ckpt)
    data = load_split("fashion-mnist-mini", "test").first(4)
    with pytest.raises(evalkit.errors.EvalkitError, match="sap_frac"):
        evaluate(model, (data.x, data.y), defense="sap", params={"sap_frac": 0}, **QUIET)


# ------------------------------------------------------------- budget and training


def _train_smallcnn(tmp_path_factory: pytest.TempPathFactory, name: str, **config: Any) -> Path:
    """``checkpoint.pt`` of a ``smallcnn`` trained on the bundled data (batch 64, seed 1, a
    32-image validation split checked with PGD-1) on one thread, the global RNG left as it was;
    ``config``: the other :class:`~evalkit.training.TrainConfig` fields."""
    from evalkit.training import TrainConfig, train

    with one_thread(), torch.random.fork_rng():
        path = train(
            TrainConfig(
                dataset="fashion-mnist-mini",
                arch="smallcnn",
                val_size=32,
                val_attack_steps=1,
                batch_size=64,
                out=str(tmp_path_factory.mktemp(name) / "train"),
                device="cpu",
                progress=False,
                seed=1,
                **config,
            )
        )
    return Path(path)


@pytest.fixture(scope="module")
def at_ckpt(tmp_path_factory) -> Path:
    """A small PGD-AT smallcnn (2 epochs on 1024 bundled images, ~1 s on one core)."""
    return _train_smallcnn(
        tmp_path_factory,
        "at",
        defense="at",
        arch_kwargs={"width": 8, "strides": "2222"},
        epochs=2,
        n_train=1024,
        attack_steps=3,
        lr=0.05,
        schedule="constant",
    )


@pytest.mark.parametrize(
    "kw",
    [
        {"attacks": "fgsm,pgd", "n": 64},
        {"preset": "pgd", "n": 64, "eps": "4/255,8/255"},
        {"preset": "fast", "attacks": "pgd,cw", "n": 48, "batch_size": 16},
    ],
    ids=["fgsm-pgd", "pgd-two-eps", "fast-pgd-cw"],
)
def test_sanity_checks_cost_at_most_a_quarter_of_the_protocol(at_ckpt, kw):
    summary = evaluate(at_ckpt, seed=0, **QUIET, **kw).summary
    assert 0.3 < summary["clean_accuracy"] and summary["worst_case"][0]["n_robust"] > 0
    cost = summary["cost"]
    sanity = cost["sanity"]
    proto = cost["protocol"]["forward_passes"] + cost["protocol"]["backward_passes"]
    proto += cost["protocol"]["cycle_saved"]  # PGD's cycle shortcut never shrinks the checks
    assert sanity["propagations"] > 0 and sanity["budget"] == int(0.25 * proto)
    assert sanity["share_of_protocol"] == pytest.approx(sanity["propagations"] / proto)
    assert sanity["share_of_protocol"] <= 0.25, sanity
    probes = cost["sanity_probes"]["forward_passes"] + cost["sanity_probes"]["backward_passes"]
    assert probes <= sanity["propagations"]


def test_an_unfinished_training_run_is_flagged(at_ckpt, tmp_path):
    """The trainer rewrites checkpoint.pt every epoch; one from epoch 2 of 5 (as a killed run
    leaves it) is flagged, in the current format (``completed`` False) and in the older one
    (``epoch`` below ``epochs``); the finished run is not."""
    finished = evaluate(at_ckpt, attacks="fgsm", n=8, sanity=False, **QUIET).summary
    assert "unfinished_training" not in [f["id"] for f in finished["flags"]]
    obj = torch.load(at_ckpt, weights_only=True)
    assert obj["epoch"] == obj["train_config"]["epochs"] == 2
    obj["train_config"]["epochs"] = 5  # as the trainer writes it after epoch 2 of 5
    if "completed" in obj["train_config"]:
        obj["train_config"]["completed"] = False
    older = {**obj, "train_config": dict(obj["train_config"])}
    older["train_config"].pop("completed", None)
    for i, payload in enumerate((obj, older)):
        path = tmp_path / f"{i}" / "checkpoint.pt"
        path.parent.mkdir()
        torch.save(payload, path)
        summary = evaluate(path, attacks="fgsm", n=8, sanity=False, **QUIET).summary
        flag = next(f for f in summary["flags"] if f["id"] == "unfinished_training")
        assert flag["severity"] == "warning" and "epoch 2 of 5" in flag["message"]


# ------------------------------------------------------------------------- CIFS


@pytest.fixture(scope="module")
def cifs_ckpt(tmp_path_factory) -> Path:
    """A tiny AT+CIFS smallcnn (1 epoch on 256 bundled images)."""
    return _train_smallcnn(
        tmp_path_factory,
        "cifs",
        defense="at+cifs",
        arch_kwargs={"width": 4},
        epochs=1,
        n_train=256,
        attack_steps=2,
    )


def test_cifs_is_attacked_through_its_mask(cifs_ckpt, tmp_path, capsys, monkeypatch):
    """Issue 10 acceptance: `evalkit attack --preset fast` on a CIFS checkpoint runs an attack
    that differentiates through the mask, and the summary says so. A spy on the CIFS mask
    confirms the graph is kept through it during that attack."""
    from evalkit.defenses.cifs import CIFSBlock

    seen: list[tuple[bool, bool]] = []
    original = CIFSBlock.mask

    def spy(self, feat):
        seen.append((bool(self.adaptive), bool(feat.requires_grad)))
        return original(self, feat)

    monkeypatch.setattr(CIFSBlock, "mask", spy)
    out = tmp_path / "run"
    argv = ["attack", "--ckpt", str(cifs_ckpt), "--preset", "fast", "--n", "16"]
    argv += ["--no-compaction", "--no-sanity", "--no-progress", "--device", "cpu"]
    rc, err = run_cli([*argv, "--out", str(out)], capsys)
    assert rc == 0, err
    summary = json.loads((out / "summary.json").read_text())
    masked = [r for r in summary["results"] if r["through_mask"]]
    assert masked and all(r["n_attacked"] > 0 and r["white_box"] for r in masked)
    record = next(a for a in summary["adaptive"] if a["name"] == "mask_gradients")
    assert record["attacks"] == [r["attack"] for r in masked]
    assert summary["traits"]["mask_gradients"] is True and summary["traits"]["aux_heads"] is True
    assert (True, True) in seen  # the mask was computed on a graph-carrying input, adaptively
    assert (False, True) in seen  # and the non-adaptive attacks treated it as a constant


def test_cifs_with_an_explicit_list_changes_it_in_place(cifs_ckpt):
    summary = evaluate(
        cifs_ckpt, preset="fast", attacks="pgd", n=8, compaction=False, sanity=False, **QUIET
    ).summary
    [r] = summary["results"]
    assert r["attack"] == "pgd-10" and r["through_mask"] is True and r["joint"] is True
    record = next(a for a in summary["adaptive"] if a["name"] == "mask_gradients")
    assert record["attacks"] == ["pgd-10"] and not record.get("left_out")
