"""Trainer: objectives run, history and checkpoint written, exact resume, DDP with torchrun."""

import csv
import subprocess
import sys

import pytest
import torch

from evalkit.checkpoint import load_model
from evalkit.cli import main
from evalkit.errors import EvalkitError
from evalkit.training import TrainConfig, train
from evalkit.training.api import train as api_train

QUICK = dict(
    dataset="fashion-mnist-mini",
    arch="smallcnn",
    arch_kwargs={"width": 8},
    n_train=256,
    val_size=64,
    batch_size=64,
    attack_steps=2,
    val_attack_steps=2,
    progress=False,
)


def _cfg(tmp_path, name, **kw):
    return TrainConfig(**(QUICK | {"out": str(tmp_path / name)} | kw))


@pytest.mark.parametrize("defense", ["standard", "at", "trades", "mart"])
def test_objectives_train_one_epoch(tmp_path, defense):
    path = train(_cfg(tmp_path, defense, defense=defense, epochs=1))
    raw = torch.load(path, weights_only=True)
    assert raw["defense"] == defense and raw["epoch"] == 1
    row = raw["history"][0]
    assert set(row) >= {"train_loss", "val_clean_acc", "val_pgd_acc", "lr"}
    assert row["train_loss"] == row["train_loss"]  # finite, not NaN


def test_resume_equals_uninterrupted(tmp_path):
    full = train(_cfg(tmp_path, "full", defense="at", epochs=2))
    part_cfg = _cfg(tmp_path, "part", defense="at", epochs=1)
    train(part_cfg)
    resumed = train(_cfg(tmp_path, "part", defense="at", epochs=2, resume=True))
    a = torch.load(full, weights_only=True)
    b = torch.load(resumed, weights_only=True)
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]


def test_out_dir_with_checkpoint_needs_resume(tmp_path, capsys):
    train(_cfg(tmp_path, "r", epochs=1))
    code = main(["train", "--out", str(tmp_path / "r"), "--epochs", "1", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--resume" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--arch", "nope"], "unknown arch"),
        (["--defense", "at+magic"], "unknown defense part"),
        (["--eps", "2"], "out of range"),
        (["--dataset", "cifar10", "--data-root", "/nonexistent"], "--download"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, capsys, argv, needle):
    code = main(["train", "--out", str(tmp_path / "e"), "--epochs", "1", "--quiet", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err and len(err.splitlines()) == 1


def test_cli_train_writes_checkpoint_and_history(tmp_path):
    out = tmp_path / "cli"
    code = main(
        [
            "train",
            "--dataset",
            "fashion-mnist-mini",
            "--arch",
            "smallcnn",
            "--width",
            "8",
            "--defense",
            "at",
            "--epochs",
            "2",
            "--n-train",
            "1000",
            "--val-size",
            "200",
            "--attack-steps",
            "3",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[-1]["val_pgd_acc"]) > 0.1  # above chance (10 classes)
    model, meta = load_model(out / "checkpoint.pt")
    assert meta.train_config["defense"] == "at" and meta.arch_kwargs == {"width": 8}


def test_torchrun_two_processes(tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        "-m",
        "evalkit",
        "train",
        "--arch",
        "smallcnn",
        "--width",
        "8",
        "--defense",
        "at",
        "--epochs",
        "1",
        "--n-train",
        "256",
        "--val-size",
        "64",
        "--batch-size",
        "64",
        "--attack-steps",
        "2",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--quiet",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    model, meta = load_model(out / "checkpoint.pt")
    assert meta.train_config["world_size"] == 2


def test_warm_start_from_another_checkpoint(tmp_path):
    first = train(_cfg(tmp_path, "nat", epochs=1))
    warm = train(
        _cfg(
            tmp_path,
            "warm",
            defense="at",
            epochs=1,
            init=str(first),
            lr=0.0,
            momentum=0.0,
            weight_decay=0.0,
        )
    )
    a, b = torch.load(first, weights_only=True), torch.load(warm, weights_only=True)
    # lr 0: weights unchanged from the init (BN running stats move, so compare conv weights)
    assert torch.equal(a["state_dict"]["layer1.0.weight"], b["state_dict"]["layer1.0.weight"])
    code = main(
        [
            "train",
            "--out",
            str(tmp_path / "bad"),
            "--epochs",
            "1",
            "--quiet",
            "--arch",
            "resnet18",
            "--init",
            str(first),
        ]
    )
    assert code == 2
    # the convergence gate: the 1-epoch start is far below 99% validation accuracy
    gated = ["train", "--out", str(tmp_path / "gated"), "--epochs", "1", "--quiet"]
    assert main([*gated, "--init", str(first), "--init-min-val-acc", "0.99"]) == 2
    assert not (tmp_path / "gated" / "checkpoint.pt").exists()
    acc = torch.load(first, weights_only=True)["history"][-1]["val_clean_acc"]
    with pytest.raises(EvalkitError, match="validation clean accuracy"):
        train(_cfg(tmp_path, "gated2", epochs=1, init=str(first), init_min_val_acc=acc + 0.01))


# ---------------------------------------------------------------------- Python API


def test_api_train_returns_a_finished_checkpoint(tmp_path):
    from evalkit.checkpoint import read_checkpoint_file, read_meta
    from evalkit.training.api import training_complete

    path = api_train(
        dataset="fashion-mnist-mini",
        arch="smallcnn",
        epochs=1,
        out=tmp_path / "m",
        width=8,
        n_train=128,
        val_size=0,
        batch_size=64,
        progress=False,
        params={},
        eps="8/255",
    )
    meta = read_meta(read_checkpoint_file(path), path)
    assert meta.arch_kwargs == {"width": 8} and meta.train_config["eps"] == pytest.approx(8 / 255)
    assert meta.train_config["completed"] is True and training_complete(meta)


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"epochs": "2"}, "epochs must be int"),
        ({"lrate": 0.1}, "unknown option 'lrate'"),
        ({"lr": "fast"}, "lr must be int or float"),
        ({"schedule": "linear"}, "schedule must be one of"),
        ({"eps": 3}, "eps"),
        ({"pool": "median"}, "pool must be avg or max"),
        ({"resume": True}, "resume=True"),
    ],
)
def test_api_errors_name_the_parameter(tmp_path, kwargs, needle):
    base = dict(dataset="fashion-mnist-mini", arch="smallcnn", epochs=1, out=tmp_path / "e")
    with pytest.raises(EvalkitError, match=needle) as err:
        api_train(**(base | kwargs))
    msg = str(err.value)
    assert len(msg.splitlines()) == 1
    if "resume" not in kwargs:
        assert "--" not in msg  # parameters, not flags


def test_interrupted_training_is_marked_unfinished_until_resumed(tmp_path, monkeypatch):
    """A checkpoint written before the last epoch says so; studies refuse it; resume finishes it."""
    import evalkit.training.trainer as trainer
    from evalkit.training.api import require_complete

    real = trainer.validate

    def stop_at_epoch_2(model, val, cfg, device, epoch, *a, **kw):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(model, val, cfg, device, epoch, *a, **kw)

    monkeypatch.setattr(trainer, "validate", stop_at_epoch_2)
    cfg = dict(QUICK, out=str(tmp_path / "i"), epochs=2, n_train=128, val_size=32)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**cfg))
    raw = torch.load(tmp_path / "i" / "checkpoint.pt", weights_only=True)
    assert raw["epoch"] == 1 and raw["train_config"]["completed"] is False
    with pytest.raises(EvalkitError, match="unfinished training checkpoint \\(epoch 1 of 2\\)"):
        require_complete(tmp_path / "i" / "checkpoint.pt")
    monkeypatch.setattr(trainer, "validate", real)
    train(TrainConfig(**(cfg | {"resume": True})))
    require_complete(tmp_path / "i" / "checkpoint.pt")
