"""Every break counts: PGD/CW-inf with ``keep_best`` return an iterate that was misclassified
even when the last one is not, and ``early_stop`` drops broken points without changing the
others by a single bit. Hand-built toy models, float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from evalkit.attacks import cw_inf, eot_loss, get_attack, make_loss, pgd
from evalkit.attacks.tracking import LogitTap, success_and_margin
from evalkit.errors import EvalkitError

pytestmark = pytest.mark.usefixtures("one_thread")


class Band(nn.Module):
    """Two classes on a scalar input t = x[:, 0]: z0 = 0 and z1 = 1 - 20 |t - 0.5|, so class 1
    wins only inside the thin band 0.45 < t < 0.55. The gradient of z1 is +1 everywhere
    (straight-through), so CE or margin ascent on y = 0 moves t right by one step per
    iteration: a large enough step crosses the band, misclassified in the middle of the run and
    correct again at its end. ``calls``/``rows`` count forwards and the points they carried."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.rows += x.shape[0]
        t = x[:, :1]
        band = 1 - 20 * (t - 0.5).abs()
        return torch.cat([torch.zeros_like(t), t + (band - t).detach()], 1)


# Starts t0 and, with step 0.07 and 4 steps, the iterates (hand-computed) and their z1:
#   0.300: 0.370 (-1.6), 0.440 (-0.2), 0.510 (+0.8), 0.580 (-0.6)  -> only step 3 broken
#   0.100: 0.170, 0.240, 0.310, 0.380 (all z1 < 0)                   -> never broken
#   0.385: 0.455 (+0.1), 0.525 (+0.5), 0.595 (-0.9), 0.665 (-2.3)   -> steps 1 and 2 broken,
#          step 2 has the lower margin z0 - z1 (-0.5 < -0.1)
STARTS = [0.300, 0.100, 0.385]
LAST = [0.580, 0.380, 0.665]
KEEP_BEST = [0.510, 0.380, 0.525]  # lowest-margin misclassified iterate, else the last
FIRST_BREAK = [0.510, 0.380, 0.455]  # early_stop keeps the first misclassified iterate
OPTS = {"steps": 4, "step_size": 0.07, "random_start": False}


def _band_batch() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.tensor(STARTS, dtype=torch.float64)[:, None]
    return x, torch.zeros(len(STARTS), dtype=torch.long)


def _t(x_adv: torch.Tensor) -> list[float]:
    return [round(v, 9) for v in x_adv[:, 0].tolist()]


def test_band_model_is_what_the_comment_says():
    model = Band()
    t = torch.tensor([[0.44], [0.46], [0.54], [0.56]], dtype=torch.float64)
    assert model(t).argmax(1).tolist() == [0, 1, 1, 0]
    t.requires_grad_(True)
    (grad,) = torch.autograd.grad(
        make_loss("ce")(model, t, torch.zeros(4, dtype=torch.long)).sum(), t
    )
    assert (grad > 0).all()


def test_plain_pgd_returns_the_last_iterate():
    x, y = _band_batch()
    assert _t(pgd(Band(), x, y, 0.3, **OPTS)) == LAST


def test_keep_best_returns_the_misclassified_iterate():
    x, y = _band_batch()
    model = Band()
    out = pgd(model, x, y, 0.3, keep_best=True, **OPTS)
    assert _t(out) == KEEP_BEST
    assert model(out).argmax(1).tolist() == [1, 0, 1]
    assert model.calls == 4 + 1 + 1  # one forward per step, one on the last iterate (+ ours)


def test_early_stop_keeps_the_first_break_and_stops_computing_it():
    x, y = _band_batch()
    model = Band()
    out = pgd(model, x, y, 0.3, early_stop=True, **OPTS)
    assert _t(out) == FIRST_BREAK
    # forward k scores iterate k-1: start (3 rows), iterate 1 (3; 0.455 breaks and leaves),
    # iterate 2 (2), iterate 3 (2; 0.510 breaks and leaves), last iterate (1)
    assert model.rows == 3 + 3 + 2 + 2 + 1  # keep_best carries all 3 points: 15


def test_cw_inf_and_the_registry_pass_keep_best_through():
    x, y = _band_batch()
    assert _t(cw_inf(Band(), x, y, 0.3, keep_best=True, **OPTS)) == KEEP_BEST
    spec = get_attack("cw")
    assert spec.iterative and get_attack("pgd").iterative and not get_attack("square").iterative
    out = spec.run(Band(), x, y, eps=0.3, keep_best=True, **OPTS)
    assert _t(out) == KEEP_BEST
    assert _t(get_attack("pgd").run(Band(), x, y, eps=0.3, early_stop=True, **OPTS)) == (
        FIRST_BREAK
    )


def test_targeted_keep_best_keeps_the_iterate_that_hits_the_target():
    x, _ = _band_batch()
    target = torch.ones(len(STARTS), dtype=torch.long)  # descending CE on class 1 moves t right
    assert _t(pgd(Band(), x, target, 0.3, targeted=True, **OPTS)) == LAST
    assert _t(pgd(Band(), x, target, 0.3, targeted=True, keep_best=True, **OPTS)) == KEEP_BEST


def test_iterates_are_scored_from_the_loss_forward_even_with_eot():
    """An EOT loss calls the model n times per step; the tap averages those calls and needs no
    forward of its own. A loss that feeds the model a copy falls back to one extra forward."""
    x, y = _band_batch()
    model = Band()
    out = pgd(model, x, y, 0.3, keep_best=True, loss=eot_loss("ce", 3), **OPTS)
    assert _t(out) == KEEP_BEST and model.calls == 3 * (4 + 1)

    def copying_ce(m, xs, ys):
        return make_loss("ce")(m, xs.clone(), ys)

    model = Band()
    out = pgd(model, x, y, 0.3, keep_best=True, loss=copying_ce, **OPTS)
    assert _t(out) == KEEP_BEST and model.calls == 2 * (4 + 1)


class Alternating(nn.Module):
    """Logits that differ on every call (+1, -1, +1, ... added to class 1), to check averaging."""

    def __init__(self) -> None:
        super().__init__()
        self.sign = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sign = -self.sign
        return torch.cat([x, x + self.sign], 1)


def test_logit_tap_averages_the_calls_on_the_watched_tensor_only():
    model = Alternating()
    x = torch.tensor([[0.2], [0.7]])
    with LogitTap(model) as tap:
        with tap.watching(x):
            # class-1 offsets -1, +1, (-1 on the clone: not recorded), +1 -> mean +1/3
            model(x), model(x), model(x.clone()), model(x)
        logits = tap.logits(model, x)
    torch.testing.assert_close(logits, torch.tensor([[0.2, 0.2 + 1 / 3], [0.7, 0.7 + 1 / 3]]))
    assert not model._forward_hooks  # removed on exit


def test_success_and_margin_by_hand():
    z = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [float("nan"), 0.0, 0.0]])
    y = torch.tensor([0, 0, 1])
    ok, margin = success_and_margin(z, y, targeted=False)
    assert ok.tolist() == [False, True, True]  # non-finite logits never count as correct
    assert margin.tolist() == [1.0, -3.0, float("-inf")]
    ok, margin = success_and_margin(z, torch.tensor([0, 1, 1]), targeted=True)
    assert ok.tolist() == [True, True, False] and margin[:2].tolist() == [-1.0, -2.0]


class RowLinear(nn.Module):
    """``x @ w.T + b`` as a broadcast product and a row sum, float64. Unlike a BLAS matrix
    product (whose last bit can depend on the batch size), each point's result is the same in
    any batch, which is what bit-identity under compaction needs."""

    def __init__(self, inputs: int, outputs: int, gen: torch.Generator) -> None:
        super().__init__()
        w = torch.randn(outputs, inputs, generator=gen, dtype=torch.float64) / inputs**0.5
        self.w = nn.Parameter(w)
        self.b = nn.Parameter(0.1 * torch.randn(outputs, generator=gen, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, None, :] * self.w).sum(-1) + self.b


def _mlp() -> nn.Module:
    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(RowLinear(8, 16, gen), nn.Tanh(), RowLinear(16, 4, gen))
    return net.eval().requires_grad_(False)


@pytest.mark.parametrize(
    "norm,eps,restarts", [("linf", 0.15, 1), ("linf", 0.15, 3), ("l2", 0.5, 1), ("l2", 0.5, 2)]
)
def test_early_stop_leaves_unbroken_points_bit_identical(norm, eps, restarts):
    """Per-iteration compaction (and restarts on the unbroken points only) must not change a
    single bit of the points that stay unbroken; keep_best without early stop neither."""
    net = _mlp()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(96, 8, generator=gen, dtype=torch.float64)
    y = net(x).argmax(1)  # every point starts correct
    common = {"steps": 10, "norm": norm, "restarts": restarts}

    def run(**flags):
        return pgd(net, x, y, eps, generator=torch.Generator().manual_seed(7), **common, **flags)

    plain, best, stop = run(), run(keep_best=True), run(early_stop=True)
    broken_best = net(best).argmax(1) != y
    broken_stop = net(stop).argmax(1) != y
    assert torch.equal(broken_best, broken_stop)
    assert 10 <= int(broken_stop.sum()) <= 86, "eps should break some points, not all"
    assert (net(plain).argmax(1) != y).sum() <= broken_best.sum()  # last iterate never wins more
    unbroken = ~broken_stop
    assert torch.equal(stop[unbroken], plain[unbroken])
    assert torch.equal(best[unbroken], plain[unbroken])
    size = (stop - x).abs().amax(1) if norm == "linf" else (stop - x).norm(dim=1)
    assert size.max() <= eps + 1e-12 and stop.min() >= 0 and stop.max() <= 1


def test_early_stop_refuses_declared_randomized_models():
    x, y = _band_batch()
    model = Band()
    model.stochastic = True
    with pytest.raises(EvalkitError, match="deterministic"):
        pgd(model, x, y, 0.3, early_stop=True, **OPTS)
    assert _t(pgd(model, x, y, 0.3, keep_best=True, **OPTS)) == KEEP_BEST
    # an EOT loss on a deterministic model is allowed (harmless, if wasteful)
    out = pgd(Band(), x, y, 0.3, early_stop=True, loss=eot_loss("ce", 2), **OPTS)
    assert _t(out) == FIRST_BREAK
