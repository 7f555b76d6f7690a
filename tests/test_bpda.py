"""Obfuscated gradients (Athalye, Carlini & Wagner, ICML 2018): shattered gradients diagnosed,
BPDA for declared non-differentiable steps (with EOT when the step is random), the
reparameterisation hook for a deep iterative preprocessing, and the input-transformation parts.

The toy classifier decides on the mean of its (transformed) input: class 1 when it exceeds 0.5.
Behind a 1-bit rounding (or anything that rounds pixels at 0.5), a grey image of value v is
breakable within Linf eps exactly when v + eps > 0.5 (push every pixel up by eps), so the
expected robust accuracies are counted by hand from the grey levels; a plain gradient attack
sees a zero gradient and cannot move the image at all.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from helpers import QUIET

import evalkit
from evalkit.defenses.bitdepth import BitDepth
from evalkit.errors import EvalkitError

pytestmark = pytest.mark.usefixtures("one_thread")


class MeanThreshold(nn.Module):
    """Two logits (0, 40 * (mean(x) - 0.5)): class 1 iff the mean pixel exceeds 0.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.flatten(1).mean(1, keepdim=True)
        return torch.cat([torch.zeros_like(m), 40.0 * (m - 0.5)], 1)


def gray(values: list[float], side: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    """Constant images of the given grey levels, all labelled 0 (mean below 0.5)."""
    x = torch.tensor(values).view(-1, 1, 1, 1).expand(-1, 1, side, side).clone()
    return x, torch.zeros(len(values), dtype=torch.long)


def expected(values: list[float], eps: float) -> float:
    """Robust accuracy behind a rounding at 0.5: a point holds iff v + eps <= 0.5."""
    return sum(v + eps <= 0.5 for v in values) / len(values)


def rows(summary: dict) -> dict[str, float]:
    return {r["attack"]: r["robust_accuracy"] for r in summary["results"] if not r["probe"]}


class NumpyRound(nn.Module):
    """Rounds to 8 bits in numpy: the input gradient is lost."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.round(x.detach().cpu().numpy() * 255.0) / 255.0
        return torch.from_numpy(arr.astype(np.float32))


class Quantised(nn.Module):
    def __init__(self, step: nn.Module) -> None:
        super().__init__()
        self.quant = step
        self.head = MeanThreshold()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.quant(x))


GREYS = [0.2, 0.3, 0.4]


@pytest.mark.parametrize("eps", [0.15, 0.25])
def test_plain_pgd_cannot_move_a_rounding_defense_and_bpda_breaks_it_as_counted(eps):
    x, y = gray(GREYS)
    summary = evaluate_toy(MeanThreshold(), x, y, eps, defense="bitdepth", bits=1)
    assert rows(summary)["pgd-20"] == 1.0  # zero gradient: only the random start moves
    assert rows(summary)["pgd-20-bpda"] == pytest.approx(expected(GREYS, eps))
    assert summary["worst_case"][0]["robust_accuracy"] == pytest.approx(expected(GREYS, eps))
    rec = next(a for a in summary["adaptive"] if a["name"] == "bpda")
    assert rec["attacks"] == ["pgd-20-bpda"] and "BitDepth(bits=1)" in rec["steps"][0]
    assert summary["traits"]["non_differentiable"] is True


def evaluate_toy(model, x, y, eps, *, defense=None, bits=None, **kw) -> dict:
    params = {"bitdepth_bits": bits} if bits is not None else None
    return evalkit.evaluate(
        model, (x, y), defense=defense, params=params, preset="pgd", eps=eps, **kw, **QUIET
    ).summary


def test_the_python_wrapper_declares_a_numpy_step_the_same_way():
    x, y = gray(GREYS)
    summary = evaluate_toy(Quantised(evalkit.bpda(NumpyRound())), x, y, 0.15)
    # 8-bit rounding in front of the mean: the BPDA attack breaks v = 0.4 only
    assert rows(summary) == {"pgd-20": 1.0, "pgd-20-bpda": pytest.approx(2 / 3)}
    plans = {p["id"]: p for p in summary["protocol"]["attacks"]}
    assert plans["pgd-20-bpda"]["attack"] == "bpda"
    assert plans["pgd-20-bpda"]["options"]["attack"] == "pgd"


@pytest.mark.parametrize(
    "model,what,where",
    [
        (Quantised(NumpyRound()), "is missing for all 3 probe points", "quant (NumpyRound)"),
        (Quantised(BitDepth(1)), "is exactly zero for 3/3 probe points", "quant (BitDepth)"),
    ],
)
def test_shattered_gradients_are_a_one_line_diagnosis_naming_the_step_and_the_fix(
    model, what, where
):
    x, y = gray(GREYS)
    with pytest.raises(EvalkitError) as err:
        evaluate_toy(model, x, y, 0.15)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("shattered gradients: ")
    assert what in msg and f"lost in submodule {where}" in msg
    assert "evalkit.bpda(step, backward='identity')" in msg
    assert "--defense bpda --param bpda_modules=quant" in msg


class SqrtFeature(nn.Module):
    """sqrt of the pixels: an infinite derivative at every black pixel (numerically unstable)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return MeanThreshold()(torch.sqrt(x))


def test_nonfinite_gradients_are_diagnosed_and_black_box_attacks_still_run():
    x, y = gray([0.0, 0.0, 0.0, 0.1])
    with pytest.raises(EvalkitError, match=r"is NaN/inf for 3/4 probe points"):
        evaluate_toy(SqrtFeature(), x, y, 0.05)
    # black-box attacks need no gradient: no diagnosis, and a missing gradient does not crash
    summary = evalkit.evaluate(
        Quantised(NumpyRound()), gray(GREYS), attacks="square", eps=0.05, **QUIET
    ).summary
    assert any(f["id"] == "missing_gradients" for f in summary["flags"])


def test_shattered_run_lets_zero_gradients_through_but_never_missing_ones():
    x, y = gray(GREYS)
    summary = evaluate_toy(Quantised(BitDepth(1)), x, y, 0.15, shattered="run")
    assert rows(summary)["pgd-20"] == 1.0
    assert any(f["id"] == "zero_gradients" for f in summary["flags"])
    with pytest.raises(EvalkitError, match="is missing"):
        evaluate_toy(Quantised(NumpyRound()), x, y, 0.15, shattered="run")


class Dither(nn.Module):
    """Random 1-bit rounding: round(x + u), u ~ U(-1/4, 1/4) per pixel and call."""

    stochastic = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round((x + (torch.rand_like(x) - 0.5) * 0.5).clamp(0, 1))


def test_bpda_with_eot_on_a_random_non_differentiable_step():
    """Behind the dither, pixel v reads 1 with probability P(u > 0.5 - v): the mean over 784
    pixels exceeds 0.5 (almost surely) iff v > 0.5, so the same rule v + eps > 0.5 decides. At
    eps 0.25: v = 0.3 breaks (mean 0.6), v = 0.2 holds (mean 0.4); a plain attack keeps its
    random start, where v = 0.3 reads 1 with probability 0.18 only."""
    x, y = gray([0.2, 0.2, 0.3, 0.3])
    summary = evaluate_toy(nn.Sequential(evalkit.bpda(Dither()), MeanThreshold()), x, y, 0.25)
    assert summary["scoring"]["semantics"] == "monte-carlo"
    res = {r["attack"]: r for r in summary["results"]}
    assert res["pgd-20"]["eot"] == res["pgd-20-bpda"]["eot"] == 20
    assert res["pgd-20"]["robust_accuracy"] == 1.0
    assert summary["worst_case"][0]["robust_accuracy"] == pytest.approx(0.5)
    names = {a["name"]: a for a in summary["adaptive"]}
    assert names["bpda"]["eot"] == 20 and "pgd-20-bpda" in names["eot"]["attacks"]


class Purifier(nn.Module):
    """300 gradient-descent steps on the double well E(u) = ((u - 0.1)(0.9 - u))^2 per pixel:
    pixels flow to 0.1 (below 0.5) or 0.9 (above). Differentiable, but each step multiplies the
    input gradient by about 1 - 0.39 * E''(min) = 0.5, so after 300 steps it underflows to
    exactly zero (the vanishing gradients of Athalye et al.'s third kind)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x
        for _ in range(300):
            u = u - 0.39 * 2 * (u - 0.1) * (0.9 - u) * (1 - 2 * u)
        return u


def settled(z: torch.Tensor) -> torch.Tensor:
    """A differentiable map onto (nearly) the purifier's fixed points 0.1 and 0.9."""
    return 0.1 + 0.8 * torch.sigmoid((z - 0.5) / 0.05)


def test_reparameterisation_of_a_deep_iterative_preprocessing():
    x, y = gray(GREYS)
    model = nn.Sequential(Purifier(), MeanThreshold())
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(xg)[:, 1].sum(), xg)
    assert bool((grad == 0).all())  # vanished, not merely small
    with pytest.raises(EvalkitError, match="exactly zero"):
        evaluate_toy(model, x, y, 0.15)
    declared = nn.Sequential(evalkit.reparameterize(Purifier(), settled), MeanThreshold())
    summary = evaluate_toy(declared, x, y, 0.15)
    assert rows(summary)["pgd-20"] == 1.0
    assert rows(summary)["pgd-20-bpda"] == pytest.approx(expected(GREYS, 0.15))
    assert "kind=reparameterisation" in summary["adaptive"][-1]["steps"][0]


def test_bpda_forward_is_the_step_and_backward_the_approximation():
    step = evalkit.bpda(BitDepth(1), backward=lambda z: 2 * z)
    x = torch.tensor([[0.2, 0.7]], requires_grad=True)
    from evalkit.defenses.context import bpda_gradients

    assert step(x).tolist() == [[0.0, 1.0]]
    (plain,) = torch.autograd.grad(step(x).sum(), x)
    assert plain.tolist() == [[0.0, 0.0]]  # torch.round's own gradient
    with bpda_gradients(step):
        y = step(x)
        (approx,) = torch.autograd.grad(y.sum(), x)
    assert y.tolist() == [[0.0, 1.0]] and approx.tolist() == [[2.0, 2.0]]
    with pytest.raises(EvalkitError, match="identity' or a differentiable callable"):
        evalkit.bpda(BitDepth(1), backward="straight")


# ---------------------------------------------------------------- input-transformation parts


@pytest.mark.parametrize("size", [2, 3, 4])
def test_median_smoothing_matches_scipy(size):
    from scipy.ndimage import median_filter as scipy_median

    from evalkit.defenses.median import median_filter

    x = torch.rand(2, 3, 9, 11, generator=torch.Generator().manual_seed(size))
    ours = median_filter(x, size).numpy()
    ref = np.stack(
        [
            np.stack([scipy_median(x[i, c].numpy(), size=size, mode="reflect") for c in range(3)])
            for i in range(2)
        ]
    )
    assert np.array_equal(ours, ref)


def test_bit_depth_levels_and_jpeg_round_trip_by_hand():
    from PIL import Image

    from evalkit.defenses.jpeg import JPEG

    x = torch.tensor([0.0, 0.1, 0.49, 0.51, 0.93, 1.0]).view(1, 1, 2, 3)
    assert (BitDepth(1)(x).flatten().tolist()) == [0, 0, 0, 1, 1, 1]
    assert BitDepth(2)(x).flatten().tolist() == pytest.approx([0, 0, 1 / 3, 2 / 3, 1, 1])
    # libjpeg through Pillow (an independent binding) at the same quality, on one image
    img = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    u8 = (img * 255).round().to(torch.uint8)[0, 0].numpy()
    import io

    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=75)
    ref = np.asarray(Image.open(io.BytesIO(buf.getvalue()))).astype(np.float32) / 255
    ours = JPEG(75)(img)[0, 0].numpy()
    assert np.abs(ours - ref).max() <= 2 / 255  # decoders may differ by a rounding or two


def test_transformation_parts_apply_to_a_checkpoint_and_bad_parameters_are_one_line(ev_ckpt):
    from evalkit.data import load_split

    test = load_split("fashion-mnist-mini", "test").first(32)
    summary = evalkit.evaluate(
        ev_ckpt, (test.x, test.y), defense="jpeg", preset="pgd", eps=0.05, n=32, **QUIET
    ).summary
    assert summary["model"]["defense"] == "jpeg" and summary["traits"]["non_differentiable"]
    assert "pgd-20-bpda" in rows(summary)
    for defense, params, match in [
        ("jpeg", {"jpeg_quality": 0}, "jpeg_quality"),
        ("bitdepth", {"bitdepth_bits": 9}, "1..8 bits"),
        ("median", {"median_size": 1}, "median_size"),
        ("bpda", {"bpda_modules": "nope"}, "not a submodule"),
        ("bpda", None, "bpda_modules=NAME"),
    ]:
        with pytest.raises(EvalkitError, match=match) as err:
            evalkit.evaluate(
                MeanThreshold(), gray(GREYS), defense=defense, params=params, preset="pgd", **QUIET
            )
        assert "\n" not in str(err.value)
