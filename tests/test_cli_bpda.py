"""The issue's acceptance through the CLI: a model whose forward rounds its input to 8 bits in
numpy. Without a declared approximation ``evalkit attack`` gives the one-line diagnosis (exit
2); declared with ``--defense bpda`` or with the Python wrapper, plain FGSM/PGD leave it robust
while their BPDA versions break it, both in summary.json and in the report.

The model's head decides on the mean pixel (class 1 above 0.5, class 0 below), so a grey image of value v is
breakable within eps 0.1 iff v + 0.1 > 0.5: of the grey levels below, 0.45 and 0.42 break,
0.3 and 0.2 hold (8-bit rounding moves a level by at most 1/510).
"""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
from helpers import one_line, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

NETS = textwrap.dedent(
    """
    import numpy as np
    import torch
    import torch.nn as nn

    import evalkit


    class NumpyRound(nn.Module):
        def forward(self, x):
            arr = np.round(x.detach().cpu().numpy() * 255.0) / 255.0
            return torch.from_numpy(arr.astype(np.float32))


    class MeanHead(nn.Module):
        def forward(self, x):
            m = x.flatten(1).mean(1, keepdim=True)
            rest = torch.full((len(x), 8), -100.0)  # ten classes, as the dataset has
            return torch.cat([torch.zeros_like(m), 40.0 * (m - 0.5), rest], 1)


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.quant = NumpyRound()
            self.head = MeanHead()

        def forward(self, x):
            return self.head(self.quant(x))


    def build():
        return Net()


    def build_declared():
        net = Net()
        net.quant = evalkit.bpda(net.quant, backward="identity")
        return net
    """
)
GREYS = [0.45, 0.42, 0.3, 0.2]


@pytest.fixture
def files(tmp_path):
    (tmp_path / "nets.py").write_text(NETS)
    x = np.repeat(np.array(GREYS, dtype=np.float32), 28 * 28).reshape(-1, 1, 28, 28)
    np.savez(tmp_path / "grey.npz", x=x, y=np.zeros(len(GREYS), dtype=np.int64))
    return tmp_path


def _attack(files, spec, capsys, *extra):
    argv = ["attack", "--model", f"{files / 'nets.py'}:{spec}", "--data", str(files / "grey.npz")]
    argv += ["--dataset", "fashion-mnist-mini"]  # the image shape of a factory model
    argv += ["--attacks", "fgsm,pgd", "--eps", "0.1", "--no-progress", "--device", "cpu", *extra]
    return run_cli(argv, capsys)


def test_undeclared_numpy_step_is_a_one_line_diagnosis(files, capsys):
    rc, err = _attack(files, "build", capsys, "--out", str(files / "r0"))
    assert rc == 2 and one_line(err)
    assert "shattered gradients" in err and "input gradient is missing" in err
    assert "submodule quant (NumpyRound)" in err
    assert "--defense bpda --param bpda_modules=quant" in err and "evalkit.bpda(" in err
    assert not (files / "r0" / "summary.json").exists()


@pytest.mark.parametrize(
    "spec,extra",
    [("build", ["--defense", "bpda", "--param", "bpda_modules=quant"]), ("build_declared", [])],
)
def test_declared_step_plain_attacks_hold_and_bpda_breaks_it(files, capsys, spec, extra):
    out = files / f"run-{spec}"
    rc, err = _attack(files, spec, capsys, *extra, "--out", str(out))
    assert rc == 0, err
    summary = json.loads((out / "summary.json").read_text())
    acc = {r["attack"]: r["robust_accuracy"] for r in summary["results"] if not r["probe"]}
    assert acc["fgsm"] == acc["pgd-20"] == 1.0  # the plain protocol: nothing moves
    assert acc["pgd-20-bpda"] == pytest.approx(0.5)  # 0.45 and 0.42 break, as counted
    assert summary["worst_case"][0]["robust_accuracy"] == pytest.approx(0.5)
    assert [a for a in summary["adaptive"] if a["name"] == "bpda"][0]["attacks"] == [
        "fgsm-bpda",
        "pgd-20-bpda",
    ]
    html = files / f"{spec}.html"
    rc, err = run_cli(["report", str(out), "-o", str(html)], capsys)
    assert rc == 0, err
    text = html.read_text()
    assert "pgd-20-bpda" in text and "fgsm-bpda" in text and "BPDA" in text
