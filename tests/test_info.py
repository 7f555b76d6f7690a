"""``evalkit info``: checkpoint description and the listings."""

from __future__ import annotations

import json

import torch

from evalkit.cli import main


def test_info_describes_an_evalkit_checkpoint(ev_ckpt, capsys):
    assert main(["info", "--ckpt", ev_ckpt, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    ck = out["checkpoint"]
    assert ck["arch"] == "smallcnn" and ck["dataset"] == "fashion-mnist-mini"
    assert ck["arch_kwargs"] == {"width": 8, "strides": "2222"}
    n_params = sum(v.numel() for v in torch.load(ev_ckpt, weights_only=True)["state_dict"].values())
    assert ck["n_parameters"] == n_params
    assert "datasets" not in out  # only what was asked


def test_info_text_and_foreign(tmp_path, capsys):
    sd = {"linear.weight": torch.zeros(10, 4), "linear.bias": torch.zeros(10)}
    path = tmp_path / "sd.pt"
    torch.save(sd, path)
    assert main(["info", "--ckpt", str(path)]) == 0
    text = capsys.readouterr().out
    assert "foreign" in text and "--arch and --dataset" in text


def test_info_lists_everything(capsys):
    assert main(["info", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"datasets", "archs", "defenses", "attacks", "presets"} <= set(out)
    assert "fashion-mnist-mini" in [d["name"] for d in out["datasets"]]
    assert "resnet18" in [a["name"] for a in out["archs"]]
    assert {"pgd", "autoattack"} <= {a["name"] for a in out["attacks"]}
    assert {"default", "fast"} <= {p["name"] for p in out["presets"]}
    assert {"cas", "sap"} <= {d["name"] for d in out["defenses"]}


def test_info_missing_checkpoint(tmp_path, capsys):
    assert main(["info", "--ckpt", str(tmp_path / "x.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
