"""The evaluation harness: protocol selection, adaptive additions, compaction, the run
directory and the summary schema, on a small trained CNN and the bundled data."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from evalkit.attacks.registry import ATTACKS
from evalkit.checkpoint import load_model
from evalkit.data import load_split
from evalkit.errors import EvalkitError
from evalkit.evaluation import EvalConfig, evaluate
from evalkit.evaluation.protocol import ModelTraits, adapt_plans, get_preset, select_attacks

REQUIRED = (
    "n_examples",
    "clean_accuracy",
    "results",
    "worst_case",
    "seed",
    "flags",
    "adaptive",
    "model",
    "protocol",
    "cost",
    "environment",
    "per_class",
)


def test_default_preset_is_the_design_protocol():
    plans = select_attacks(get_preset("default"), None, "linf", ATTACKS)
    assert [p.id for p in plans] == ["fgsm", "pgd-20", "cw-inf", "autoattack"]
    pgd, cw = plans[1], plans[2]
    assert pgd.options == {"steps": 20, "random_start": True}
    assert pgd.resolved_options(8 / 255)["step_size"] == pytest.approx(2 / 255)
    assert cw.loss == "cw" and cw.options["steps"] == 30
    assert plans[3].options["version"] == "standard"


def test_attack_names_map_to_preset_entries_and_registry():
    preset = get_preset("default")
    ids = [p.id for p in select_attacks(preset, ["pgd", "cw", "square"], "linf", ATTACKS)]
    assert ids == ["pgd-20", "cw-inf", "square"]
    l2 = select_attacks(preset, ["pgd", "cw"], "l2", ATTACKS)
    assert [p.attack for p in l2] == ["pgd", "cw_l2"]
    assert "step_size" not in l2[0].resolved_options(0.5, "l2")  # L2 uses PGD's own rule
    with pytest.raises(EvalkitError, match="known: .*fgsm.*pgd"):
        select_attacks(preset, ["nosuch"], "linf", ATTACKS)
    with pytest.raises(EvalkitError, match="does not support --norm l2"):
        select_attacks(preset, ["fgsm"], "l2", ATTACKS)
    # the default preset silently drops FGSM under L2 (it is Linf-only)
    assert "fgsm" not in [p.id for p in select_attacks(preset, None, "l2", ATTACKS)]


def test_adaptive_additions_follow_the_model_flags():
    base = select_attacks(get_preset("default"), None, "linf", ATTACKS)
    plans, adaptive = adapt_plans(base, ModelTraits())
    assert plans == base and adaptive == []

    plans, adaptive = adapt_plans(base, ModelTraits(aux_heads=True, beta=2.0))
    joint = [p.id for p in plans if p.joint]
    assert joint == ["fgsm-joint", "pgd-20-joint", "cw-inf-joint"]
    assert plans[-1].id == "autoattack"  # AutoAttack stays last (it attacks the final logits)
    assert adaptive[0]["name"] == "joint_loss" and adaptive[0]["attacks"] == joint

    plans, adaptive = adapt_plans(base, ModelTraits(stochastic=True))
    assert all(p.eot == 20 for p in plans if p.uses_loss)
    assert "autoattack-rand" in [p.id for p in plans]
    assert {a["name"] for a in adaptive} == {"eot", "autoattack_rand"}

    plans, adaptive = adapt_plans(base, ModelTraits(bounded_logits=True))
    ids = [p.id for p in plans]
    assert "pgd-20-dlr" in ids and ids.index("pgd-20-dlr") < ids.index("autoattack")
    assert adaptive[0]["name"] == "dlr_loss"

    plans, _ = adapt_plans(base, ModelTraits(), eot=5, loss="dlr")
    assert [p.loss for p in plans[:3]] == ["dlr", "dlr", "cw"]  # CW keeps its margin
    assert plans[1].eot == 5


@pytest.fixture(scope="module")
def run(ev_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("harness") / "run"
    cfg = EvalConfig(
        ckpt=ev_ckpt,
        attacks="fgsm,pgd",
        eps="2/255,8/255",
        n=48,
        batch_size=16,
        out=out,
        seed=5,
        progress=False,
        echo=False,
        sanity=False,
    )
    return out, evaluate(cfg)


def test_summary_schema_and_files(run):
    out, summary = run
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    for key in REQUIRED:
        assert key in summary, key
    assert summary["n_examples"] == 48 and summary["seed"] == 5
    assert summary["compaction"] is True and summary["protocol"]["compaction"] is True
    for r in summary["results"]:
        assert 0.0 <= r["robust_accuracy"] <= summary["clean_accuracy"] <= 1.0
        assert r["max_norm"] <= r["eps_value"] + 1e-6
        assert r["ball_violations"] == 0
    assert [w["eps"] for w in summary["worst_case"]] == ["2/255", "8/255"]
    assert summary["cost"]["forward_passes"] > 0 and summary["cost"]["backward_passes"] > 0
    assert summary["environment"]["torch"] == torch.__version__
    assert "state_dict" not in summary["model"]
    assert (out / "config.json").exists() and (out / "records" / "rank0.jsonl").exists()
    assert sum(c["n"] for c in summary["per_class"]) == 48


def test_clean_accuracy_matches_an_independent_forward(run, ev_ckpt):
    _, summary = run
    model, _ = load_model(ev_ckpt)
    data = load_split("fashion-mnist-mini", "test").first(48)
    with torch.no_grad():
        pred = model(data.float_batch(slice(0, 48))).argmax(1)
    assert summary["clean_accuracy"] == pytest.approx(float((pred == data.y).float().mean()))


def test_compaction_waterfall(run):
    _, summary = run
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
    out, summary = run
    df = pd.read_parquet(out / "examples.parquet")
    assert len(df) == 48 and df["index"].tolist() == list(range(48))
    for col in (
        "label",
        "clean_pred",
        "clean_margin",
        "pgd-20@8/255:pred",
        "pgd-20@8/255:norm",
        "pgd-20@8/255:margin",
        "worst@8/255:robust",
    ):
        assert col in df.columns, col
    # a point is robust iff it was correct and no attack flipped it; margins agree with preds
    attacked = df["pgd-20@8/255:pred"] != -1
    agree = (df.loc[attacked, "pgd-20@8/255:margin"] > 0) == (
        df.loc[attacked, "pgd-20@8/255:pred"] == df.loc[attacked, "label"]
    )
    assert agree.all()
    assert int(df["worst@8/255:robust"].sum()) == summary["worst_case"][1]["n_robust"]
    assert (df.loc[attacked, "pgd-20@8/255:norm"] <= 8 / 255 + 1e-6).all()


def test_no_compaction_attacks_every_correct_point(ev_ckpt):
    summary = evaluate(
        EvalConfig(
            ckpt=ev_ckpt,
            attacks="fgsm,pgd",
            eps="8/255",
            n=16,
            batch_size=16,
            preset="fast",
            compaction=False,
            seed=1,
            progress=False,
            echo=False,
            sanity=False,
        )
    )
    assert summary["compaction"] is False
    for r in summary["results"]:
        assert r["n_attacked"] == summary["n_clean_correct"]
        assert r["cumulative"] is False
    pgd = next(r for r in summary["results"] if r["attack"] == "pgd-10")
    assert summary["worst_case"][0]["n_robust"] <= pgd["n_robust"]


def test_out_dir_exists_without_resume_is_refused(run, ev_ckpt):
    out, _ = run
    with pytest.raises(EvalkitError, match="--resume"):
        evaluate(EvalConfig(ckpt=ev_ckpt, attacks="fgsm", n=8, out=out, echo=False, progress=False))


def test_resume_with_other_settings_is_refused(run, ev_ckpt):
    out, _ = run
    with pytest.raises(EvalkitError, match="different"):
        evaluate(
            EvalConfig(
                ckpt=ev_ckpt,
                attacks="fgsm,pgd",
                eps="2/255,8/255",
                n=48,
                batch_size=16,
                out=out,
                seed=6,
                resume=True,
                echo=False,
                progress=False,
                sanity=False,
            )
        )


def test_resume_of_a_finished_run_recomputes_nothing(run, ev_ckpt):
    out, summary = run
    again = evaluate(
        EvalConfig(
            ckpt=ev_ckpt,
            attacks="fgsm,pgd",
            eps="2/255,8/255",
            n=48,
            batch_size=16,
            out=out,
            seed=5,
            resume=True,
            echo=False,
            progress=False,
            sanity=False,
        )
    )
    strip = lambda s: {k: v for k, v in s.items() if k != "cost"}  # noqa: E731
    assert strip(again) == strip(json.loads(json.dumps(summary)))
    lines = (out / "records" / "rank0.jsonl").read_text().splitlines()
    assert len(lines) == 3 + 2 * 2 * 3  # clean + (2 attacks x 2 eps) per batch, written once


def test_model_mode_is_restored(ev_ckpt):
    """evaluate loads its own model; attacking a model given via attack_mode restores mode."""
    from evalkit.evaluation.compat import attack_mode

    model, _ = load_model(ev_ckpt)
    model.train()
    with attack_mode(model):
        assert not model.training
    assert model.training


def test_aux_head_checkpoint_gets_the_joint_loss_attack(tmp_path):
    from evalkit.checkpoint import save_checkpoint
    from evalkit.defenses import apply_defenses, parse_spec
    from evalkit.models import build_model

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = apply_defenses(
            build_model("smallcnn", num_classes=10, in_channels=1, width=4, strides="2222"),
            parse_spec("at+cas"),
        )
    path = tmp_path / "cas.pt"
    save_checkpoint(
        path, model.eval(), dataset="fashion-mnist-mini", input_size=28, defense="at+cas"
    )
    summary = evaluate(
        EvalConfig(
            ckpt=path, attacks="pgd", n=16, batch_size=16, progress=False, echo=False, sanity=False
        )
    )
    assert [r["attack"] for r in summary["results"]] == ["pgd-20", "pgd-20-joint"]
    assert summary["adaptive"][0]["name"] == "joint_loss"
    assert summary["results"][1]["joint"] is True and summary["traits"]["aux_heads"] is True


def test_stochastic_defense_gets_eot_and_a_flag(ev_ckpt):
    summary = evaluate(
        EvalConfig(
            ckpt=ev_ckpt,
            defense="sap",
            attacks="fgsm",
            eot=2,
            n=8,
            batch_size=8,
            progress=False,
            echo=False,
            sanity=False,
        )
    )
    assert summary["model"]["defense"].endswith("sap")
    assert summary["results"][0]["eot"] == 2
    eot = next(a for a in summary["adaptive"] if a["name"] == "eot")
    assert eot["n"] == 2 and "stochastic" in eot["reason"]
    assert any(f["id"] == "randomness_detected" for f in summary["flags"])
    # EOT-2 FGSM: 2 forward + 2 backward per attacked image (+1 forward to score it)
    r = summary["results"][0]
    assert r["backward_passes"] == 2 * r["n_attacked"]
    assert r["forward_passes"] == 3 * r["n_attacked"]
