"""Everyday inputs, each a class handled or refused with one line naming the fix (issue 18):
evaluation inside ``no_grad``/``inference_mode``; checkpoints holding raw and EMA weights;
``n`` above the data size; a folder given as a checkpoint; did-you-mean for attacks, presets,
analyses and eps in 0-255 units; help text with defaults for every flag; the interrupt message
and ``--resume`` of an auto-named run; ``--model-dir``; ``--save-adversarial``."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import QUIET, one_line, one_thread, run_cli

import evalkit
from evalkit.data import load_split
from evalkit.errors import EvalkitError
from evalkit.models import build_model


def _data(n: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    split = load_split("fashion-mnist-mini", "test").first(n)
    return split.float_batch(slice(None)), split.y


def _net(seed: int = 0, width: int = 4) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("smallcnn", num_classes=10, in_channels=1, width=width).eval()


# ------------------------------------------------------------------ no_grad / inference_mode


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_evaluate_inside_no_grad_and_inference_mode(context) -> None:
    """An ordinary eval loop wraps everything in no_grad or inference_mode (the data created
    there too); the numbers equal those of a plain call and the caller's mode is restored."""
    net = _net()
    x, y = _data()
    kw = dict(eps="8/255", attacks=["fgsm", "pgd", "apgd"], sanity=True, **QUIET)
    with one_thread():
        plain = evalkit.evaluate(net, (x, y), **kw)
        with context():
            xi, yi = x.clone(), y.clone()
            inside = evalkit.evaluate(net, (xi, yi), **kw)
            assert not torch.is_grad_enabled()
    assert inside.summary["results"] == plain.summary["results"]
    assert inside.summary["worst_case"] == plain.summary["worst_case"]


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_attack_functions_turn_gradients_on_themselves(context) -> None:
    import evalkit.attacks as A

    net = _net()
    x, y = _data(8)
    with one_thread():
        ref = A.pgd(net, x, y, eps=8 / 255, steps=3, generator=torch.Generator().manual_seed(0))
        with context():
            got = A.pgd(net, x, y, eps=8 / 255, steps=3, generator=torch.Generator().manual_seed(0))
            fg = A.get_attack("fgsm").run(net, x, y, eps=8 / 255)
    assert torch.equal(got, ref) and (fg - x).abs().max() > 0


def test_a_model_built_inside_inference_mode_is_refused_with_the_fix() -> None:
    with torch.inference_mode():
        net = _net()
    x, y = _data(8)
    with pytest.raises(EvalkitError) as err:
        evalkit.evaluate(net, (x, y), attacks=["pgd"], **QUIET)
    assert "outside inference_mode" in str(err.value) and one_line(str(err.value))


# ----------------------------------------------------------------------------- weight sets


def _two_sets(tmp_path: Path, layout: str) -> tuple[Path, torch.nn.Module, torch.nn.Module]:
    raw, ema = _net(0, width=16), _net(1, width=16)  # smallcnn's default width (as the CLI builds)
    sd_raw, sd_ema = raw.state_dict(), ema.state_dict()
    if layout == "state_dict+state_dict_ema":
        obj = {"state_dict": sd_raw, "state_dict_ema": sd_ema, "epoch": 3}
    elif layout == "model+model_ema":
        obj = {"model": sd_raw, "model_ema": sd_ema}
    else:  # one flat dict with ema.-prefixed copies
        obj = {**sd_raw, **{f"ema.{k}": v for k, v in sd_ema.items()}}
    path = tmp_path / "ckpt.pt"
    torch.save(obj, path)
    return path, raw, ema


@pytest.mark.parametrize("layout", ["state_dict+state_dict_ema", "model+model_ema", "flat-ema"])
def test_two_weight_sets_are_never_chosen_silently(tmp_path: Path, layout: str) -> None:
    from evalkit.checkpoint import load_model
    from evalkit.checkpoint_files import weights_set_choice
    from evalkit.models.sources import load_any

    path, raw, ema = _two_sets(tmp_path, layout)
    kw = dict(arch="smallcnn", dataset="fashion-mnist-mini")
    for load in (load_model, load_any):
        with pytest.raises(EvalkitError) as err:
            load(path, **kw)
        assert "--weights-set ema|raw" in str(err.value) and one_line(str(err.value))
    x, _ = _data(4)
    for which, ref in (("ema", ema), ("raw", raw)):
        model, _ = load_model(path, weights_set=which, **kw)
        assert torch.equal(model(x), ref(x)), which
        with weights_set_choice(which):  # how evaluate() reaches every model source
            model, _ = load_any(path, **kw)
        assert torch.equal(model(x), ref(x)), which


def test_weights_set_reaches_config_and_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _, ema = _two_sets(tmp_path, "state_dict+state_dict_ema")
    x, y = _data(16)
    with one_thread():
        res = evalkit.evaluate(
            str(path),
            (x, y),
            arch="smallcnn",
            dataset="fashion-mnist-mini",
            weights_set="ema",
            attacks=["fgsm"],
            sanity=False,
            out=tmp_path / "run",
            **QUIET,
        )
        direct = evalkit.evaluate(ema, (x, y), attacks=["fgsm"], sanity=False, **QUIET)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["weights_set"] == "ema"
    assert (
        res.summary["results"][0]["robust_accuracy"]
        == direct.summary["results"][0]["robust_accuracy"]
    )
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy())
    base = ["attack", "--ckpt", str(path), "--arch", "smallcnn", "--dataset", "fashion-mnist-mini"]
    base += ["--data", str(tmp_path / "d.npz")]
    base += ["--attacks", "fgsm", "--no-sanity", "--no-progress", "--device", "cpu"]
    rc, err = run_cli([*base, "--out", str(tmp_path / "cli")], capsys)
    assert rc == 2 and "--weights-set" in err and one_line(err), err
    with one_thread():
        rc, err = run_cli(
            [*base, "--out", str(tmp_path / "cli-ema"), "--weights-set", "ema"], capsys
        )
    assert rc == 0, err
    cfg = json.loads((tmp_path / "cli-ema" / "config.json").read_text())
    assert cfg["weights_set"] == "ema" and cfg["model_sha256"] == res.fingerprints["model_sha256"]
    with pytest.raises(EvalkitError, match="holds no ema weights"):
        from evalkit.checkpoint import load_model

        torch.save({"state_dict": ema.state_dict()}, tmp_path / "one.pt")
        load_model(
            tmp_path / "one.pt", arch="smallcnn", dataset="fashion-mnist-mini", weights_set="ema"
        )


# ------------------------------------------------------------------------ n above the data


def test_n_above_the_data_size_is_an_error(tmp_path: Path, capsys) -> None:
    x, y = _data(32)
    with pytest.raises(EvalkitError) as err:
        evalkit.evaluate(_net(), (x, y), n=5000, attacks=["fgsm"], **QUIET)
    assert "n=5000" in str(err.value) and "holds 32 examples" in str(err.value)
    np.savez(tmp_path / "d.npz", x=(x * 255).round().byte().numpy(), y=y.numpy())
    torch.save({"state_dict": _net(width=16).state_dict()}, tmp_path / "m.pt")
    rc, err = run_cli(
        ["attack", "--ckpt", str(tmp_path / "m.pt"), "--arch", "smallcnn", "--dataset"]
        + ["fashion-mnist-mini", "--data", str(tmp_path / "d.npz"), "--n", "5000"]
        + ["--out", str(tmp_path / "r")],
        capsys,
    )
    assert rc == 2 and "n=5000" in err and one_line(err), err


def test_analyze_records_n_above_the_data(tmp_path: Path, capsys) -> None:
    x, y = _data(6)
    with one_thread():
        res = evalkit.analyze(
            {"m": _net()},
            analysis="channels",
            data=(x, y),
            n=50,
            out=tmp_path / "an",
            device="cpu",
            progress=False,
            steps=1,
        )
    assert res.doc["n_requested"] == 50
    assert any("n=50 was asked for" in note for note in res.doc["notes"])
    assert "n=50 was asked for" in capsys.readouterr().err


# ------------------------------------------------------------------- folder as a checkpoint


def test_a_folder_is_resolved_to_its_one_checkpoint_or_refused(
    tmp_path: Path, ev_ckpt: str, capsys
) -> None:
    import shutil

    from evalkit.checkpoint import load_model

    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(ev_ckpt, one / "weights.pth")
    model, meta = load_model(one)
    assert meta.path == str(one / "weights.pth")
    assert f"using {one / 'weights.pth'}" in capsys.readouterr().err
    two = tmp_path / "two"
    two.mkdir()
    for name in ("a.pt", "b.pt"):
        shutil.copy(ev_ckpt, two / name)
    rc, err = run_cli(["attack", "--ckpt", str(two), "--n", "4"], capsys)
    assert rc == 2 and "holds 2 checkpoint files (a.pt, b.pt)" in err and one_line(err), err
    (tmp_path / "none").mkdir()
    rc, err = run_cli(["attack", "--ckpt", str(tmp_path / "none"), "--n", "4"], capsys)
    assert rc == 2 and "without a checkpoint file" in err and one_line(err), err


# --------------------------------------------------------------------------- did you mean


def test_did_you_mean_helper() -> None:
    from evalkit.utils.suggest import did_you_mean, eps_hint

    assert did_you_mean("pgdd", ["pgd", "fgsm", "square"]) == "did you mean 'pgd'?"
    assert did_you_mean("zzz", ["pgd"]) == ""
    assert eps_hint(8) == "did you mean 8/255?" and eps_hint(0.5) == "" and eps_hint(8, "l2") == ""


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["attack", "--attacks", "pgdd"], "did you mean 'pgd'"),
        (["attack", "--preset", "defualt"], "did you mean 'default'"),
        (["attack", "--eps", "8"], "did you mean 8/255?"),
        (["attack", "--eps", "8/255,4"], "did you mean 4/255?"),
        (["train", "--eps", "8", "--out", "unused"], "did you mean 8/255?"),
        (["analyze", "--analysis", "chanels", "--out", "unused"], "did you mean 'channels'"),
    ],
)
def test_did_you_mean_everywhere(argv, hint, ev_ckpt, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    if argv[0] in ("attack", "analyze"):
        argv = [argv[0], "--ckpt", ev_ckpt, *argv[1:], "--n", "4"]
    rc, err = run_cli(argv, capsys)
    assert rc == 2 and hint in err and one_line(err), err


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    from evalkit.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_flag_has_help_with_its_default() -> None:
    missing = []
    for name, sub in _subparsers().items():
        for a in sub._actions:
            if isinstance(a, argparse._HelpAction) or not a.option_strings:
                continue
            text = (a.help or "").lower()
            switch = isinstance(a, (argparse._StoreTrueAction, argparse._StoreFalseAction))
            if not text or not (switch or "default" in text or "required" in text):
                missing.append(f"{name} {a.option_strings[0]}")
    assert missing == []


def test_top_level_and_analyze_help_list_every_analysis(capsys) -> None:
    from evalkit.analyses import available_analyses
    from evalkit.cli import main

    for argv in (["--help"], ["analyze", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        text = capsys.readouterr().out
        for name in available_analyses():
            assert name in text, (argv, name)


# --------------------------------------------------------------- interrupt and auto resume


def test_interrupt_names_the_run_and_resume_finds_the_auto_named_run(
    ev_ckpt: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    """Ctrl-C in an auto-named run prints where it is and the exact command that continues it;
    ``--resume`` without ``--out`` then picks that run (not a newer one of another checkpoint)
    and ends with the numbers of an uninterrupted run."""
    from evalkit.evaluation import engine
    from evalkit.evaluation.autoname import model_stem

    monkeypatch.chdir(tmp_path)
    decoy = tmp_path / "runs" / f"attack-{model_stem(ev_ckpt)}-29991231-235959"
    decoy.mkdir(parents=True)
    (decoy / "config.json").write_text(json.dumps({"checkpoint_sha256": "0" * 64}))
    argv = ["attack", "--ckpt", ev_ckpt, "--preset", "pgd", "--n", "32", "--batch-size", "8"]
    argv += ["--no-progress", "--no-sanity", "--device", "cpu"]
    real, calls = engine.attack_unit, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "attack_unit", interrupted)
    with one_thread():
        rc, err = run_cli(argv, capsys)
    assert rc == 130, err
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p != decoy]
    expected = shlex.join(["evalkit", *argv, "--out", str(run_dir), "--resume"])
    assert f"completed units are saved in {run_dir}; continue with: {expected}" in err
    monkeypatch.setattr(engine, "attack_unit", real)
    with one_thread():
        rc = evalkit.cli.main([*argv, "--resume"])
        out = capsys.readouterr().out
        assert rc == 0
        assert f"resuming {run_dir}" in out
        whole = evalkit.evaluate(ev_ckpt, n=32, preset="pgd", batch_size=8, sanity=False, **QUIET)
    resumed = json.loads((run_dir / "summary.json").read_text())
    assert resumed["worst_case"][0]["robust_accuracy"] == whole.robust_accuracy
    assert resumed["worst_case"][0]["robust_accuracy_ci"] == list(whole.robust_accuracy_ci)


def test_train_interrupt_hint_names_the_resume_command(tmp_path: Path) -> None:
    from evalkit.commands.train import interrupted_hint

    args = argparse.Namespace(out=str(tmp_path))
    argv = ["train", "--epochs", "3", "--out", str(tmp_path)]
    assert "nothing to resume" in interrupted_hint(args, argv)
    (tmp_path / "checkpoint.pt").write_bytes(b"x")
    hint = interrupted_hint(args, argv)
    assert hint.endswith(shlex.join(["evalkit", *argv, "--resume"]))


# ---------------------------------------------------------------------- --model-dir (CLI)


def test_model_dir_for_robustbench_ids(tmp_path: Path, monkeypatch, capsys) -> None:
    from evalkit.models import robustbench_offline as rb

    monkeypatch.setitem(rb.KNOWN, ("cifar10", "L2", "Tiny"), ("smallcnn", {"width": 4}))
    torch.manual_seed(0)
    ref = build_model("smallcnn", num_classes=10, in_channels=3, width=4).eval()
    (tmp_path / "zoo" / "cifar10" / "L2").mkdir(parents=True)
    torch.save(ref.state_dict(), tmp_path / "zoo" / "cifar10" / "L2" / "Tiny.pt")
    g = torch.Generator().manual_seed(0)
    np.savez(
        tmp_path / "d.npz",
        x=torch.randint(0, 256, (4, 3, 32, 32), generator=g, dtype=torch.uint8).numpy(),
        y=np.arange(4),
    )
    argv = ["attack", "--model", "robustbench:cifar10/L2/Tiny", "--data", str(tmp_path / "d.npz")]
    argv += ["--attacks", "fgsm", "--no-sanity", "--no-progress", "--device", "cpu"]
    rc, err = run_cli([*argv, "--out", str(tmp_path / "r1")], capsys)
    assert rc == 2 and "never downloads" in err  # ./models has no such entry
    with one_thread():
        rc, err = run_cli(
            [*argv, "--model-dir", str(tmp_path / "zoo"), "--out", str(tmp_path / "r2")], capsys
        )
    assert rc == 0, err
    assert json.loads((tmp_path / "r2" / "summary.json").read_text())["model"]["arch"] == "smallcnn"


# ------------------------------------------------------------------- --save-adversarial


def test_save_adversarial_round_trips_into_evaluate(ev_ckpt: str, tmp_path: Path, capsys) -> None:
    """The worst-case images, with the attack that made each, load back as data: the model's
    clean accuracy on them is the run's worst-case robust accuracy, every saved image lies in
    the eps ball of its clean image, and only broken points carry an attack name."""
    out = tmp_path / "run"
    argv = ["attack", "--ckpt", ev_ckpt, "--preset", "fast", "--n", "48", "--eps", "8/255,2/255"]
    argv += ["--save-adversarial", "--out", str(out), "--no-progress", "--device", "cpu"]
    with one_thread():
        rc, err = run_cli(argv, capsys)
    assert rc == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["adversarial"] == {
        "8/255": "adversarial/8-255.npz",
        "2/255": "adversarial/2-255.npz",
    }
    clean = load_split("fashion-mnist-mini", "test").first(48)
    ids = {r["attack"] for r in summary["results"]} | {"clean", ""}
    for w in summary["worst_case"]:
        z = np.load(out / summary["adversarial"][w["eps"]])
        assert z["x"].shape == (48, 1, 28, 28) and str(z["eps"]) == w["eps"]
        assert set(z["attack"]) <= ids and np.array_equal(z["y"], clean.y.numpy())
        assert np.array_equal(z["attack"] == "", z["score"] >= 1)
        delta = np.abs(z["x"] - clean.float_batch(slice(None)).numpy()).reshape(48, -1).max(1)
        assert delta.max() <= w["eps_value"] + 1e-6
        assert (delta[z["attack"] == "clean"] == 0).all() and (delta[z["attack"] == ""] == 0).all()
        with one_thread():
            again = evalkit.evaluate(
                ev_ckpt, str(out / summary["adversarial"][w["eps"]]), attacks=["fgsm"], **QUIET
            )
        assert again.clean_accuracy == w["robust_accuracy"]
