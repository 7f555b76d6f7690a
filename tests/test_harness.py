"""The evaluation harness (:func:`evalkit.evaluate`): protocol selection, adaptive changes,
compaction, the run directory and the summary schema, on a small trained CNN and the bundled
data."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from helpers import QUIET, one_thread

from evalkit.checkpoint import load_model
from evalkit.data import load_split
from evalkit.errors import EvalkitError
from evalkit.evaluation import EvalResult, evaluate
from evalkit.evaluation.protocol import ModelTraits, adapt_plans, get_preset, select_attacks

REQUIRED = (
    "schema_version",
    "n_examples",
    "clean_accuracy",
    "scoring",
    "results",
    "worst_case",
    "seed",
    "flags",
    "adaptive",
    "model",
    "fingerprints",
    "protocol",
    "cost",
    "environment",
    "per_class",
)
#: The settings of the module's ``run`` (seed 5); resume tests repeat them exactly.
RUN = dict(attacks="fgsm,pgd", eps="2/255,8/255", n=48, batch_size=16, sanity=False, **QUIET)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_default_preset_is_the_design_protocol():
    plans = select_attacks(get_preset("default"), None, "linf")
    assert [p.id for p in plans] == ["fgsm", "pgd-20", "cw-inf", "autoattack"]
    pgd, cw = plans[1], plans[2]
    assert pgd.options == {"steps": 20, "random_start": True}
    assert pgd.resolved_options(8 / 255)["step_size"] == pytest.approx(2 / 255)
    assert cw.loss == "cw" and cw.options["steps"] == 30
    assert plans[3].options["version"] == "standard"


def test_attack_names_map_to_preset_entries_and_registry():
    preset = get_preset("default")
    ids = [p.id for p in select_attacks(preset, ["pgd", "cw", "square"], "linf")]
    assert ids == ["pgd-20", "cw-inf", "square"]
    l2 = select_attacks(preset, ["pgd", "cw"], "l2")
    assert [p.attack for p in l2] == ["pgd", "cw_l2"]
    assert "step_size" not in l2[0].resolved_options(0.5, "l2")  # L2 uses PGD's own rule
    with pytest.raises(EvalkitError, match="known: .*fgsm.*pgd"):
        select_attacks(preset, ["nosuch"], "linf")
    with pytest.raises(EvalkitError, match="does not support norm l2"):
        select_attacks(preset, ["fgsm"], "l2")
    # the default preset silently drops FGSM under L2 (it is Linf-only)
    assert "fgsm" not in [p.id for p in select_attacks(preset, None, "l2")]


def test_adaptive_additions_follow_the_model_traits():
    base = select_attacks(get_preset("default"), None, "linf")
    plans, adaptive = adapt_plans(base, ModelTraits())
    assert plans == base and adaptive == []

    plans, adaptive = adapt_plans(base, ModelTraits(aux_heads=True, beta=2.0))
    joint = [p.id for p in plans if p.joint]
    assert joint == ["fgsm-joint", "pgd-20-joint", "cw-inf-joint"]
    assert plans[-1].id == "autoattack"  # AutoAttack stays last (it attacks the final logits)
    assert adaptive[0]["name"] == "joint_loss" and adaptive[0]["attacks"] == joint

    plans, adaptive = adapt_plans(base, ModelTraits(stochastic=True))
    assert all(p.eot == 20 for p in plans if p.uses_loss)
    aa = next(p for p in plans if p.attack == "autoattack")
    assert aa.id == "autoattack-rand" and aa.options["eot_iter"] == 20
    assert {a["name"] for a in adaptive} == {"eot", "autoattack_rand"}

    plans, adaptive = adapt_plans(base, ModelTraits(bounded_logits=True))
    ids = [p.id for p in plans]
    assert "pgd-20-dlr" in ids and ids.index("pgd-20-dlr") < ids.index("autoattack")
    assert adaptive[0]["name"] == "dlr_loss"

    plans, _ = adapt_plans(base, ModelTraits(), eot=5, loss="dlr")
    assert [p.loss for p in plans[:3]] == ["dlr", "dlr", "cw"]  # CW keeps its margin
    assert plans[1].eot == 5


def test_eot_reaches_autoattack_custom_of_the_fast_preset():
    """Issue 10: AutoAttack custom (fast, study-cpu) ran with eot_iter=1 on randomized models."""
    for name in ("fast", "study-cpu"):
        base = select_attacks(get_preset(name), None, "linf")
        plans, adaptive = adapt_plans(base, ModelTraits(stochastic=True))
        aa = next(p for p in plans if p.attack == "autoattack")
        assert aa.options["eot_iter"] == 20 and aa.eot == 20, name
        eot = next(a for a in adaptive if a["name"] == "eot")
        assert aa.id in eot["attacks"]


def test_pgd_preset_on_a_random_model_does_not_claim_autoattack_ran():
    """Issue 10: under --preset pgd no AutoAttack runs, so the summary must not say it did."""
    base = select_attacks(get_preset("pgd"), None, "linf")
    plans, adaptive = adapt_plans(base, ModelTraits(stochastic=True))
    assert [p.attack for p in plans] == ["pgd"]
    rand = [a for a in adaptive if a["name"] == "autoattack_rand"]
    assert all(a["attacks"] == [] for a in rand)
    assert all(a.get("left_out") for a in rand)


@pytest.fixture(scope="module")
def run(ev_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("harness") / "run"
    with one_thread():  # module fixtures run before the function-scoped one_thread fixture
        result = evaluate(ev_ckpt, out=out, seed=5, **RUN)
    return out, result


def test_result_object(run):
    out, result = run
    assert isinstance(result, EvalResult)
    assert result.run_dir == out
    assert result.clean_accuracy == result.summary["clean_accuracy"]
    assert result.robust_accuracy == result.summary["worst_case"][0]["robust_accuracy"]
    assert len(result.examples) == 48
    assert "worst case" in repr(result)


def test_summary_schema_and_files(run):
    out, result = run
    summary = result.summary
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    for key in REQUIRED:
        assert key in summary, key
    assert summary["n_examples"] == 48 and summary["seed"] == 5
    assert summary["compaction"] is True and summary["protocol"]["compaction"] is True
    assert summary["scoring"]["semantics"] == "exact" and summary["scoring"]["draws"] == 1
    for r in summary["results"]:
        assert 0.0 <= r["robust_accuracy"] <= summary["clean_accuracy"] <= 1.0
        assert r["max_norm"] <= r["eps_value"] + 1e-6
        assert r["ball_violations"] == 0
    assert [w["eps"] for w in summary["worst_case"]] == ["2/255", "8/255"]
    assert summary["cost"]["forward_passes"] > 0 and summary["cost"]["backward_passes"] > 0
    assert summary["environment"]["torch"] == torch.__version__
    assert summary["environment"]["evalkit"]
    assert "state_dict" not in summary["model"]
    for key in ("model_sha256", "checkpoint_sha256", "data_sha256"):
        assert len(summary["fingerprints"][key]) == 64, key
    assert (out / "config.json").exists() and (out / "records" / "rank0.jsonl").exists()
    assert sum(c["n"] for c in summary["per_class"]) == 48


def test_clean_accuracy_matches_an_independent_forward(run, ev_ckpt):
    _, result = run
    model, _ = load_model(ev_ckpt)
    data = load_split("fashion-mnist-mini", "test").first(48)
    with torch.no_grad():
        pred = model(data.float_batch(slice(0, 48))).argmax(1)
    expected = float((pred == data.y).float().mean())
    assert result.summary["clean_accuracy"] == pytest.approx(expected)
    # deterministic model: exact 0/1 scores, the same as the independent forward point by point
    df = result.examples
    assert set(df["clean_p"].unique()) <= {0.0, 1.0}
    assert df["clean_correct"].tolist() == (pred == data.y).tolist()
    assert df["clean_pred"].tolist() == pred.tolist()


def test_compaction_waterfall(run):
    _, result = run
    summary = result.summary
    by = {(r["attack"], r["eps"]): r for r in summary["results"]}
    for eps in ("2/255", "8/255"):
        fgsm, pgd = by[("fgsm", eps)], by[("pgd-20", eps)]
        assert fgsm["n_attacked"] == summary["n_clean_correct"]
        assert pgd["n_attacked"] == fgsm["n_robust"]  # PGD only sees FGSM's survivors
        assert pgd["n_robust"] == fgsm["n_robust"] - pgd["n_broken"]
        worst = next(w for w in summary["worst_case"] if w["eps"] == eps)
        assert worst["n_robust"] == pgd["n_robust"]
    # a trained model loses accuracy under attack, and more at the larger eps
    w = {x["eps"]: x["n_robust"] for x in summary["worst_case"]}
    assert w["8/255"] < summary["n_clean_correct"]
    assert w["8/255"] <= w["2/255"]


def test_examples_parquet_one_row_per_example(run):
    out, result = run
    summary = result.summary
    df = pd.read_parquet(out / "examples.parquet")
    pd.testing.assert_frame_equal(df, result.examples.reset_index(drop=True), check_dtype=False)
    assert len(df) == 48 and df["index"].tolist() == list(range(48))
    for col in (
        "label",
        "clean_pred",
        "clean_margin",
        "clean_p",
        "clean_correct",
        "pgd-20@8/255:pred",
        "pgd-20@8/255:norm",
        "pgd-20@8/255:margin",
        "pgd-20@8/255:p",
        "pgd-20@8/255:score",
        "worst@8/255:score",
        "worst@8/255:robust",
        "worst@8/255:broken_by",
    ):
        assert col in df.columns, col
    # a point is robust iff it was correct and no attack flipped it; margins agree with preds
    attacked = df["pgd-20@8/255:pred"] != -1
    agree = (df.loc[attacked, "pgd-20@8/255:margin"] > 0) == (
        df.loc[attacked, "pgd-20@8/255:pred"] == df.loc[attacked, "label"]
    )
    assert agree.all()
    assert (df.loc[~attacked, "pgd-20@8/255:p"].isna()).all()
    assert int(df["worst@8/255:robust"].sum()) == summary["worst_case"][1]["n_robust"]
    assert (df.loc[attacked, "pgd-20@8/255:norm"] <= 8 / 255 + 1e-6).all()
    # broken_by names the first candidate that broke the point; robust points have none
    robust = df["worst@8/255:robust"]
    assert (df.loc[robust, "worst@8/255:broken_by"] == "").all()
    assert set(df.loc[~robust, "worst@8/255:broken_by"]) <= {"clean", "fgsm", "pgd-20"}
    wrong = ~df["clean_correct"]
    assert (df.loc[wrong, "worst@8/255:broken_by"] == "clean").all()
    fgsm_broke = (df["fgsm@8/255:p"] == 0) & df["clean_correct"]
    assert (df.loc[fgsm_broke, "worst@8/255:broken_by"] == "fgsm").all()
    counts = summary["worst_case"][1]["broken_by"]
    assert sum(counts.values()) == 48 - summary["worst_case"][1]["n_robust"]


def test_no_compaction_attacks_every_correct_point(ev_ckpt):
    summary = evaluate(
        ev_ckpt,
        attacks="fgsm,pgd",
        eps="8/255",
        n=16,
        batch_size=16,
        preset="fast",
        compaction=False,
        seed=1,
        sanity=False,
        **QUIET,
    ).summary
    assert summary["compaction"] is False
    for r in summary["results"]:
        assert r["n_attacked"] == summary["n_clean_correct"]
        assert r["cumulative"] is False
    pgd = next(r for r in summary["results"] if r["attack"] == "pgd-10")
    assert summary["worst_case"][0]["n_robust"] <= pgd["n_robust"]


def test_out_dir_exists_without_resume_is_refused(run, ev_ckpt):
    out, _ = run
    with pytest.raises(EvalkitError, match="already exists: resume it"):
        evaluate(ev_ckpt, attacks="fgsm", n=8, out=out, **QUIET)


def test_resume_without_out_is_refused(ev_ckpt):
    with pytest.raises(EvalkitError, match="resume needs out="):
        evaluate(ev_ckpt, attacks="fgsm", n=8, resume=True, **QUIET)


def test_resume_with_other_settings_is_refused(run, ev_ckpt):
    out, _ = run
    with pytest.raises(EvalkitError, match=r"cannot resume .*the seed changed"):
        evaluate(ev_ckpt, out=out, seed=6, resume=True, **RUN)


def test_resume_of_a_finished_run_recomputes_nothing(run, ev_ckpt):
    out, result = run
    lines_before = (out / "records" / "rank0.jsonl").read_text().splitlines()
    again = evaluate(ev_ckpt, out=out, seed=5, resume=True, **RUN)

    def strip(s: dict) -> dict:
        return {k: v for k, v in json.loads(json.dumps(s)).items() if k != "cost"}

    assert strip(again.summary) == strip(result.summary)
    lines = (out / "records" / "rank0.jsonl").read_text().splitlines()
    assert lines == lines_before
    assert len(lines) == 3 + 2 * 2 * 3  # clean + (2 attacks x 2 eps) per batch, written once


def test_model_mode_is_restored(ev_ckpt):
    """evaluate attacks in eval mode and hands a Python module back in the mode it came in."""
    from evalkit.attacks.mode import attack_mode

    model, _ = load_model(ev_ckpt)
    model.train()
    with attack_mode(model):
        assert not model.training
    assert model.training
    data = load_split("fashion-mnist-mini", "test").first(8)
    evaluate(model, (data.x, data.y), attacks="fgsm", sanity=False, **QUIET)
    assert model.training


def _cas_checkpoint(path):
    from evalkit.checkpoint import save_checkpoint
    from evalkit.defenses import apply_defenses, parse_spec
    from evalkit.models import build_model

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = apply_defenses(
            build_model("smallcnn", num_classes=10, in_channels=1, width=4, strides="2222"),
            parse_spec("at+cas"),
        )
    save_checkpoint(
        path, model.eval(), dataset="fashion-mnist-mini", input_size=28, defense="at+cas"
    )
    return path


def test_aux_head_checkpoint_gets_the_joint_loss_in_place(tmp_path):
    """An explicit attack list runs those attacks, made adaptive (joint loss) in place."""
    path = _cas_checkpoint(tmp_path / "cas.pt")
    summary = evaluate(path, attacks="pgd", n=16, batch_size=16, sanity=False, **QUIET).summary
    assert [r["attack"] for r in summary["results"]] == ["pgd-20"]
    assert summary["results"][0]["joint"] is True and summary["traits"]["aux_heads"] is True
    joint = next(a for a in summary["adaptive"] if a["name"] == "joint_loss")
    assert joint["attacks"] == ["pgd-20"]


def test_stochastic_defense_gets_eot_and_a_flag(ev_ckpt):
    summary = evaluate(
        ev_ckpt,
        defense="sap",
        attacks="fgsm",
        eot=2,
        mc_draws=3,
        n=8,
        batch_size=8,
        sanity=False,
        **QUIET,
    ).summary
    assert summary["model"]["defense"].endswith("sap")
    assert summary["results"][0]["eot"] == 2
    eot = next(a for a in summary["adaptive"] if a["name"] == "eot")
    assert eot["n"] == 2 and "stochastic" in eot["reason"]
    assert any(f["id"] == "randomness_detected" for f in summary["flags"])
    assert summary["scoring"]["semantics"] == "monte-carlo" and summary["scoring"]["draws"] == 3
    # EOT-2 FGSM: 2 forward + 2 backward per attacked image (+3 forwards to score it)
    r = summary["results"][0]
    assert r["n_attacked"] > 0
    assert r["backward_passes"] == 2 * r["n_attacked"]
    assert r["forward_passes"] == (2 + 3) * r["n_attacked"]
    assert summary["cost"]["clean"]["forward_passes"] == 3 * 8
