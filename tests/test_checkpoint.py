"""Checkpoints: self-describing, weights_only, hostile and broken files refused with one line."""

import os

import pytest
import torch

from evalkit.checkpoint import load_model, read_checkpoint_file, save_checkpoint
from evalkit.errors import CheckpointError
from evalkit.models import build_model


def _small(tmp_path):
    model = build_model(
        "smallcnn", num_classes=10, in_channels=1, mean=[0.286], std=[0.353], width=8
    )
    path = tmp_path / "m.pt"
    save_checkpoint(
        path,
        model,
        dataset="fashion-mnist-mini",
        input_size=28,
        defense="at",
        train_config={"epochs": 1},
        history=[{"epoch": 1, "val_pgd_acc": 0.5}],
        epoch=1,
    )
    return model, path


def test_roundtrip_and_metadata_with_weights_only(tmp_path):
    model, path = _small(tmp_path)
    raw = torch.load(path, weights_only=True)
    for key in (
        "format_version",
        "arch",
        "num_classes",
        "in_channels",
        "input_size",
        "mean",
        "std",
        "defense",
        "defense_params",
        "dataset",
        "train_config",
        "history",
        "state_dict",
    ):
        assert key in raw, key
    loaded, meta = load_model(path)
    assert meta.arch == "smallcnn" and meta.defense == "at" and meta.history[0]["epoch"] == 1
    x = torch.rand(3, 1, 28, 28)
    model.eval()
    assert torch.equal(model(x), loaded(x))


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_pickle_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        torch.save({"state_dict": _Payload(marker)}, fh)
    with pytest.raises(CheckpointError, match="refused"):
        load_model(path, arch="smallcnn", dataset="fashion-mnist-mini")
    assert not marker.exists()


def test_truncated_file(tmp_path):
    _, path = _small(tmp_path)
    bad = tmp_path / "trunc.pt"
    bad.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        read_checkpoint_file(bad)


def test_missing_file_and_missing_key(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nope.pt")
    _, path = _small(tmp_path)
    raw = torch.load(path, weights_only=True)
    del raw["arch"]
    torch.save(raw, tmp_path / "nokey.pt")
    with pytest.raises(CheckpointError, match="missing arch"):
        load_model(tmp_path / "nokey.pt")


def test_wrong_arch_for_foreign_state_dict(tmp_path):
    sd = build_model("smallcnn", num_classes=10, in_channels=1).state_dict()
    torch.save(sd, tmp_path / "sd.pt")
    with pytest.raises(CheckpointError, match="pass --arch and --dataset"):
        load_model(tmp_path / "sd.pt")
    with pytest.raises(CheckpointError, match="does not match arch 'resnet18'"):
        load_model(tmp_path / "sd.pt", arch="resnet18", dataset="fashion-mnist-mini")
    model, meta = load_model(tmp_path / "sd.pt", arch="smallcnn", dataset="fashion-mnist-mini")
    assert meta.foreign and meta.mean == [0.0]


def test_foreign_cifar_resnet18_loads_unchanged():
    import pyautoattack

    path = os.path.join(os.path.dirname(pyautoattack.__file__), "examples", "model_test.pt")
    if not os.path.exists(path):
        pytest.skip("pyautoattack example checkpoint not shipped")
    model, meta = load_model(path, arch="resnet18", dataset="cifar10")
    assert meta.num_classes == 10
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 10)
