"""Speed opt-ins (issue 21): bf16/fp16 autocast, channels-last and torch.compile give the fp32
numbers within a stated tolerance, and a precision that zeroes the gradient is refused.

Tolerance: reduced precision rounds logits, so points within a rounding of the decision
boundary can flip. On this model (smallcnn, 128 bundled test images, FGSM + PGD-20 at eps 0.1)
bf16 and fp16 stay within 3 points (4 of 128) of fp32 in clean and robust accuracy and agree on
at least 95% of the per-point worst-case outcomes; channels-last and compile's eager backend
only change memory layout or tracing, and must agree exactly.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from helpers import QUIET

from evalkit import evaluate
from evalkit.errors import EvalkitError
from evalkit.models.precision import Accelerated, accelerate

KW = dict(attacks="fgsm,pgd", eps="0.1", n=128, seed=0, sanity=False, **QUIET)


@pytest.fixture(scope="module")
def fp32(ev_ckpt):
    return evaluate(ev_ckpt, **KW)


def _outcomes(result) -> torch.Tensor:
    return torch.tensor(result.examples["worst@0.1:score"].to_numpy())


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_is_within_tolerance_of_fp32(ev_ckpt, fp32, precision):
    low = evaluate(ev_ckpt, precision=precision, **KW)
    assert abs(low.clean_accuracy - fp32.clean_accuracy) <= 0.03
    assert abs(low.robust_accuracy - fp32.robust_accuracy) <= 0.03
    agree = float((_outcomes(low) == _outcomes(fp32)).float().mean())
    assert agree >= 0.95, agree
    assert low.summary["model"] == fp32.summary["model"]
    assert low.summary["environment"]["acceleration"]["precision"] == precision  # it ran so
    assert low.fingerprints["model_sha256"] == fp32.fingerprints["model_sha256"]  # same weights


@pytest.mark.parametrize("options", [{"channels_last": True}, {"compile": "eager"}])
def test_layout_and_tracing_change_no_outcome(ev_ckpt, fp32, options):
    other = evaluate(ev_ckpt, **options, **KW)
    applied = other.summary["environment"]["acceleration"]
    assert all(applied[k] == v for k, v in options.items()), applied
    assert other.fingerprints["model_sha256"] == fp32.fingerprints["model_sha256"]
    assert torch.equal(_outcomes(other), _outcomes(fp32))
    assert other.robust_accuracy == fp32.robust_accuracy


def test_logits_come_out_in_fp32_and_inputs_stay_fp32():
    seen = {}

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 3)

        def forward(self, x):
            seen["x"] = x.dtype
            out = self.lin(x)
            seen["inner"] = out.dtype
            return out

    model = accelerate(Spy(), precision="bf16")
    assert isinstance(model, Accelerated)
    out = model(torch.rand(2, 4))
    assert out.dtype == torch.float32 and seen == {"x": torch.float32, "inner": torch.bfloat16}
    assert accelerate(Spy()).__class__ is Spy  # nothing asked: the model itself


class Tiny(nn.Module):
    """Logits of order 1e-9: fp16's smallest subnormal is 6e-8, so they round to zero."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(784, 10)

    def forward(self, x):
        return self.lin(x.flatten(1)) * 1e-9


def test_a_precision_that_underflows_the_gradient_is_refused(tmp_path):
    torch.manual_seed(0)
    x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    evaluate(Tiny(), (x, y), attacks="fgsm", eps="0.1", sanity=False, **QUIET)  # fp32 runs
    with pytest.raises(EvalkitError) as info:
        evaluate(Tiny(), (x, y), attacks="fgsm", eps="0.1", precision="fp16", **QUIET)
    msg = str(info.value)
    assert "precision=fp16" in msg and "underflow" in msg and "\n" not in msg, msg


def test_an_unknown_precision_is_one_line():
    with pytest.raises(EvalkitError, match="precision must be fp32, bf16 or fp16"):
        evaluate(Tiny(), (torch.rand(4, 1, 28, 28), torch.zeros(4).long()), precision="fp8")


def test_the_cli_flags_reach_the_run(ev_ckpt, tmp_path, capsys):
    import json

    from helpers import run_cli

    out = tmp_path / "run"
    argv = ["attack", "--ckpt", ev_ckpt, "--attacks", "fgsm", "--n", "16", "--no-sanity"]
    argv += ["--precision", "bf16", "--channels-last", "--compile", "eager", "--out", str(out)]
    rc, err = run_cli([*argv, "--no-progress", "--device", "cpu"], capsys)
    assert rc == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["acceleration"] == {
        "precision": "bf16",
        "channels_last": True,
        "compile": "eager",
    }


class Cramped(nn.Module):
    """A model whose device 'memory' holds at most ``limit`` images per forward."""

    def __init__(self, inner: nn.Module, limit: int) -> None:
        super().__init__()
        self.inner, self.limit = inner, limit

    def forward(self, x):
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(x)


def test_the_batch_size_backs_off_until_a_batch_fits(ev_ckpt, capsys):
    from evalkit.checkpoint import load_model

    inner, _ = load_model(ev_ckpt)
    kw = dict(attacks="fgsm,pgd", eps="0.1", n=64, seed=0, sanity=False, progress=False)
    result = evaluate(Cramped(inner, 20), "fashion-mnist-mini", batch_size=64, **kw)
    out = capsys.readouterr().out
    assert "batch size 64 ran out of device memory; using 16" in out
    assert result.summary["n_examples"] == 64
    assert result.summary["environment"]["batch_size"] == 16
    reference = evaluate(inner, "fashion-mnist-mini", batch_size=16, **kw)
    assert result.robust_accuracy == reference.robust_accuracy  # the same units as batch 16
    from evalkit.evaluation.memory import fit_batch_size

    with pytest.raises(EvalkitError, match="one example does not fit"):
        fit_batch_size(Cramped(inner, 0), lambda k: torch.rand(k, 1, 28, 28), 8)
