"""``evalkit attack`` end to end: a foreign CIFAR ResNet-18 state_dict, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evalkit.cli import main


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
        (["--batch-size", "0"], "--batch-size must be >= 1"),
    ],
)
def test_bad_flags_give_one_line_errors(ev_ckpt, tmp_path, capsys, extra, needle):
    rc = main(["attack", "--ckpt", ev_ckpt, "--out", str(tmp_path / "r"), "--no-progress", *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_missing_checkpoint(tmp_path, capsys):
    rc = main(["attack", "--ckpt", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "checkpoint not found" in err and len(err.splitlines()) == 1


def test_mismatched_data_shape(ev_ckpt, tmp_path, capsys):
    data = tmp_path / "rgb.npz"
    np.savez(data, x=np.zeros((4, 3, 32, 32), np.uint8), y=np.zeros(4, np.int64))
    rc = main(["attack", "--ckpt", ev_ckpt, "--data", str(data), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "the model expects (1, 28, 28)" in err and len(err.splitlines()) == 1


def test_foreign_state_dict_without_arch(tmp_path, capsys):
    rc = main(["attack", "--ckpt", str(_aa_example_ckpt()), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--arch and --dataset" in err and len(err.splitlines()) == 1


def test_existing_out_needs_resume(ev_ckpt, tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    rc = main(["attack", "--ckpt", ev_ckpt, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--resume" in err and "another --out" in err


def test_help_explains_the_protocol(capsys):
    with pytest.raises(SystemExit):
        main(["attack", "--help"])
    text = capsys.readouterr().out
    for word in ("PGD-20", "AutoAttack", "compaction", "--resume", "torchrun", "--preset"):
        assert word in text
