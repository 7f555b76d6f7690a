"""``evalkit attack`` end to end: a foreign CIFAR ResNet-18 state_dict, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import one_line, run_cli

from evalkit.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def _aa_example_ckpt() -> Path:
    import pyautoattack

    path = Path(pyautoattack.__file__).parent / "examples" / "model_test.pt"
    if not path.exists():
        pytest.skip("pyautoattack's example checkpoint is not installed")
    return path


def test_foreign_resnet18_state_dict_evaluates(tmp_path, capsys):
    """pyautoattack's CIFAR-10 ResNet-18 (plain state_dict, raw [0,1] input) loads as it is."""
    rng = np.random.default_rng(0)
    data = tmp_path / "x.npz"
    np.savez(
        data,
        x=rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),  # NHWC uint8
        y=rng.integers(0, 10, 8),
    )
    out = tmp_path / "run"
    rc = main(
        [
            "attack",
            "--ckpt",
            str(_aa_example_ckpt()),
            "--arch",
            "resnet18",
            "--dataset",
            "cifar10",
            "--data",
            str(data),
            "--attacks",
            "fgsm,pgd",
            "--n",
            "8",
            "--batch-size",
            "8",
            "--out",
            str(out),
            "--no-sanity",
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "evaluation protocol" in printed and "worst case" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["foreign"] is True and summary["model"]["arch"] == "resnet18"
    assert summary["model"]["mean"] == [0.0, 0.0, 0.0]  # identity normalization by default
    assert summary["n_examples"] == 8
    assert [r["attack"] for r in summary["results"]] == ["fgsm", "pgd-20"]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--attacks", "nosuch"], "unknown attack 'nosuch' (known:"),
        (["--eps", "0"], "eps 0 is out of range"),
        (["--eps", "1.5"], "eps 1.5 is out of range"),
        (["--eps", "abc"], "cannot read eps"),
        (["--preset", "nosuch"], "unknown preset"),
        (["--batch-size", "0"], "--batch-size: must be >= 1"),
        (["--loss", "nosuch"], "loss must be ce, cw or dlr"),
        (["--norm", "l3"], "norm must be linf or l2"),
        (["--param", "novalue"], "must be KEY=VALUE"),
    ],
)
def test_bad_flags_give_one_line_errors(ev_ckpt, tmp_path, capsys, extra, needle):
    argv = ["attack", "--ckpt", ev_ckpt, "--out", str(tmp_path / "r"), "--no-progress", *extra]
    rc, err = run_cli([*argv, "--device", "cpu"], capsys)
    assert rc == 2
    assert needle in err and one_line(err), err
    assert not (tmp_path / "r" / "summary.json").exists()


def test_missing_checkpoint(tmp_path, capsys):
    argv = ["attack", "--ckpt", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "r")]
    rc, err = run_cli(argv, capsys)
    assert rc == 2 and "not found" in err and "nope.pt" in err and one_line(err), err


def test_mismatched_data_shape(ev_ckpt, tmp_path, capsys):
    data = tmp_path / "rgb.npz"
    np.savez(data, x=np.zeros((4, 3, 32, 32), np.uint8), y=np.zeros(4, np.int64))
    argv = ["attack", "--ckpt", ev_ckpt, "--data", str(data), "--out", str(tmp_path / "r")]
    rc, err = run_cli([*argv, "--device", "cpu"], capsys)
    assert rc == 2 and "the model expects (1, 28, 28)" in err and one_line(err), err


def test_foreign_state_dict_without_arch(tmp_path, capsys):
    argv = ["attack", "--ckpt", str(_aa_example_ckpt()), "--out", str(tmp_path / "r")]
    rc, err = run_cli(argv, capsys)
    assert rc == 2 and "--arch and --dataset" in err and one_line(err), err


def test_existing_out_needs_resume(ev_ckpt, tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    rc, err = run_cli(["attack", "--ckpt", ev_ckpt, "--out", str(out), "--device", "cpu"], capsys)
    assert rc == 2 and "resume it" in err and "another out" in err and one_line(err), err
    assert (out / "summary.json").read_text() == "{}"  # nothing overwritten


def test_resume_without_out_and_no_earlier_run_names_the_fix(
    ev_ckpt, capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # no runs/ folder here
    rc, err = run_cli(["attack", "--ckpt", ev_ckpt, "--resume"], capsys)
    assert rc == 2 and "no earlier auto-named run" in err and "--out DIR" in err, err
    assert one_line(err), err


def test_no_model_given(capsys):
    rc, err = run_cli(["attack", "--n", "4"], capsys)
    assert rc == 2 and "--ckpt" in err and one_line(err), err


def test_help_explains_the_protocol(capsys):
    with pytest.raises(SystemExit):
        main(["attack", "--help"])
    text = capsys.readouterr().out
    for word in (
        "PGD-20",
        "AutoAttack",
        "compaction",
        "--resume",
        "torchrun",
        "--preset",
        "--mc-draws",
        "--param",
        "--force-normalize",
        "docs/protocol.md",
    ):
        assert word in text, word
    assert "DESIGN.md" not in text  # help points into the repository's docs only


def test_model_from_a_file_outside_the_package_matches_the_api(tmp_path):
    """`evalkit attack --model file.py:factory --ckpt weights` evaluates an architecture evalkit
    does not know, and writes the same numbers as `evalkit.evaluate` on the same module."""
    import json

    import evalkit
    from evalkit.cli import main

    src = tmp_path / "mynet.py"
    src.write_text(
        "import torch.nn as nn\n"
        "def build():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))\n"
    )
    import importlib.util

    spec = importlib.util.spec_from_file_location("mynet_for_test", src)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    net = mod.build()
    torch.save(net.state_dict(), tmp_path / "w.pt")
    out = tmp_path / "cli-run"
    rc = main(
        [
            "attack",
            "--model",
            f"{src}:build",
            "--ckpt",
            str(tmp_path / "w.pt"),
            "--dataset",
            "fashion-mnist-mini",
            "--n",
            "16",
            "--attacks",
            "fgsm,pgd",
            "--eps",
            "0.05",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    for name in ("config.json", "summary.json", "examples.parquet"):
        assert (out / name).is_file()
    cli = json.loads((out / "summary.json").read_text())
    api = evalkit.evaluate(
        net,
        "fashion-mnist-mini",
        n=16,
        attacks="fgsm,pgd",
        eps="0.05",
        progress=False,
        echo=False,
    ).summary
    assert cli["clean_accuracy"] == api["clean_accuracy"]
    assert cli["worst_case"][0]["robust_accuracy"] == api["worst_case"][0]["robust_accuracy"]
    assert cli["fingerprints"]["model_sha256"] == api["fingerprints"]["model_sha256"]


@pytest.mark.parametrize("command", ["train", "attack", "analyze"])
@pytest.mark.parametrize("flag", ["--no-progress", "--quiet"])
def test_every_progress_command_takes_both_spellings(command, flag):
    """train, attack and analyze show progress bars; both spellings turn them off on each."""
    from evalkit.cli import build_parser

    needs = {
        "train": ["--out", "x"],
        "attack": ["--ckpt", "m.pt"],
        "analyze": ["--ckpt", "m.pt", "--out", "x", "--analysis", "channels"],
    }
    args = build_parser().parse_args([command, *needs[command], flag])
    assert getattr(args, "quiet", False) or getattr(args, "no_progress", False)
    plain = build_parser().parse_args([command, *needs[command]])
    assert not (getattr(plain, "quiet", False) or getattr(plain, "no_progress", False))
