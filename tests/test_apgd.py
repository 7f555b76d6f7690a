"""evalkit's own APGD-CE / APGD-DLR / APGD-T (Croce & Hein 2020): hand-computed losses and
checkpoints, the threat-model invariant, exact cost accounting, compaction leaving every
unbroken point's result unchanged, the stopping rules (``stop_plateau``, ``stop_far``,
``skip_far_targets``) on constructed cases with hand-computed costs and results, the registry
entries, and a cross-check against ``pyautoattack`` (robust accuracy and propagation counts on
the same points), the ``aa-fast`` preset's own options included."""

from __future__ import annotations

import copy
import importlib
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from evalkit.attacks import eot_loss, get_attack, make_loss
from evalkit.attacks.apgd import (
    APGDError,
    apgd,
    apgd_ce_t,
    apgd_targeted,
    checkpoints,
    dlr_loss,
    dlr_targeted_loss,
    target_classes,
)
from evalkit.errors import EvalkitError
from evalkit.evaluation.protocol import PRESETS
from evalkit.evaluation.units import CostCounter

# the module itself (``evalkit.attacks.apgd`` the attribute is the function, re-exported)
APGD_MODULE = importlib.import_module("evalkit.attacks.apgd")

EPS = 0.1
N_CROSS = 200  # points in the pyautoattack cross-check
N_ITER_CROSS = 50
# Tolerance of the pyautoattack cross-check, in points out of N_CROSS. Derivation: both attacks
# run the same algorithm from different random starts, so they can only disagree on points
# whose outcome depends on the start. On this model, 8 seeds of each gave identical robust
# counts (0 of 200 points disagreed, APGD-CE alone and APGD-CE + APGD-T); we allow 1% (2 points)
# for BLAS/platform rounding moving a borderline point. A broken step, projection, momentum or
# restart rule shifts the count by much more.
CROSS_TOL = 2


@pytest.fixture(autouse=True)
def _apgd_one_thread():
    """These models are tiny: threads only add contention on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _apgd_mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))


@pytest.fixture(scope="module")
def apgd_robust_mlp() -> nn.Module:
    """A 784-64-10 MLP, PGD-AT (5 steps, eps 0.1) for 2 epochs on the bundled train split
    (~0.5 s on one core; ~68% clean, ~46% robust accuracy), eval mode, no parameter grads."""
    from evalkit.attacks.pgd import pgd
    from evalkit.data import iterate_batches, load_split

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = _apgd_mlp()
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(0)
        split = load_split("fashion-mnist-mini", "train")
        for _ in range(2):
            for _, x, y in iterate_batches(split, 100, shuffle=True, generator=gen):
                model.eval()
                model.requires_grad_(False)
                x_adv = pgd(model, x, y, EPS, steps=5, step_size=EPS / 2.5, generator=gen)
                model.requires_grad_(True)
                model.train()
                loss = F.cross_entropy(model(x_adv), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def apgd_test_data() -> tuple[torch.Tensor, torch.Tensor]:
    from evalkit.data import load_split

    split = load_split("fashion-mnist-mini", "test").first(N_CROSS)
    return split.float_batch(torch.arange(N_CROSS)), torch.as_tensor(split.y)


def _robust(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x_adv).argmax(1) == y


def _in_threat_model(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> None:
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    d = (x_adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    assert float(size.max()) <= eps * (1 + 1e-6) + 1e-7
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1


def test_dlr_hand_values() -> None:
    z = torch.tensor([[3.0, 1.0, 2.0, 0.0], [3.0, 1.0, 2.0, 0.0], [0.5, 4.0, -1.0, 2.0]])
    y = torch.tensor([0, 2, 0])
    # sorted z: (3, 2, 1, 0) and (4, 2, 0.5, -1); DLR = -(z_y - max_{i!=y} z_i) / (z1 - z3)
    want = torch.tensor([-(3 - 2) / (3 - 1), -(2 - 3) / (3 - 1), -(0.5 - 4) / (4 - 0.5)])
    torch.testing.assert_close(dlr_loss(z, y), want)
    # targeted: -(z_y - z_t) / (z1 - (z3 + z4) / 2)
    t = torch.tensor([3, 1, 3])
    want_t = torch.tensor(
        [-(3 - 0) / (3 - 0.5), -(2 - 1) / (3 - 0.5), -(0.5 - 2) / (4 - (0.5 - 1) / 2)]
    )
    torch.testing.assert_close(dlr_targeted_loss(z, y, t), want_t)
    # APGD-T's targets: the other classes by decreasing clean logit
    assert target_classes(z, y, 3).tolist() == [[2, 1, 3], [0, 1, 3], [1, 3, 2]]


def test_checkpoints_follow_the_paper() -> None:
    # p = 0, .22, .41, .57, .70, .80, .87, .93, .99 -> w = ceil(100 p); 99 = n_iter - 1 is too
    # late to matter (no step follows it)
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93]
    assert checkpoints(10) == [3, 5, 6, 7, 8]
    assert checkpoints(1) == []


@pytest.mark.parametrize(
    "norm,eps,kind", [("linf", EPS, "ce"), ("linf", EPS, "dlr"), ("l2", 1.0, "t")]
)
def test_stays_in_ball_and_box(apgd_robust_mlp, apgd_test_data, norm, eps, kind) -> None:
    x, y = apgd_test_data
    x, y = x[:64], y[:64]
    gen = torch.Generator().manual_seed(0)
    if kind == "t":
        x_adv = apgd_targeted(apgd_robust_mlp, x, y, eps=eps, norm=norm, n_iter=10, generator=gen)
    else:
        x_adv = apgd(apgd_robust_mlp, x, y, eps=eps, norm=norm, loss=kind, n_iter=10, generator=gen)
    _in_threat_model(x_adv, x, eps, norm)
    clean_wrong = ~_robust(apgd_robust_mlp, x, y)
    assert torch.equal(x_adv[clean_wrong], x[clean_wrong])  # already misclassified: x itself
    assert _robust(apgd_robust_mlp, x_adv, y).sum() < (~clean_wrong).sum()  # it breaks some


class _Biased(nn.Module):
    """Tiny input weights, a large bias for class 0: no eps-0.1 perturbation changes the label."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(784, 10)
        with torch.no_grad():
            self.fc.weight.uniform_(-1e-4, 1e-4, generator=torch.Generator().manual_seed(0))
            self.fc.bias.zero_()
            self.fc.bias[0] = 10.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_exact_cost_when_nothing_breaks() -> None:
    # per call: one clean forward; per run (restart or target) n_iter forward+backward and one
    # forward for the final iterate; times eot_iter
    model = _Biased().double().eval().requires_grad_(False)  # float64: CE changes are ~1e-7
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.zeros(6, dtype=torch.long)
    n = 6
    cases = (
        (apgd, {"n_restarts": 2}, 2, 1),
        (apgd_targeted, {"n_target_classes": 3, "n_restarts": 2}, 6, 1),
        (apgd, {"eot_iter": 3}, 1, 3),
    )
    for fn, kw, runs, eot in cases:
        counter = CostCounter(model)
        x_adv = fn(model, x, y, eps=EPS, n_iter=7, **kw)
        counter.close()
        assert counter.snapshot() == (eot * (n + runs * 8 * n), eot * runs * 7 * n)
        _in_threat_model(x_adv, x, EPS, "linf")
        assert torch.equal(_robust(model, x_adv, y), torch.ones(n, dtype=torch.bool))
        if fn is apgd_targeted:
            continue
        # unbroken points get their highest-loss (CE) iterate, not the clean input back
        with torch.no_grad():
            gain = F.cross_entropy(model(x_adv), y, reduction="none") - F.cross_entropy(
                model(x), y, reduction="none"
            )
        assert bool((gain > 0).all())


class _Bowl(nn.Module):
    """Logits ``(10 |x - c|^2, -5, -5, -5)``: the CE of class 0 peaks at ``x = c`` (inside the
    ball) and the label never changes, so only step-size halving can land a sign step on c."""

    def __init__(self, c: torch.Tensor) -> None:
        super().__init__()
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = ((x - self.c) ** 2).flatten(1).sum(1)
        rest = torch.full((x.shape[0], 3), -5.0, dtype=x.dtype)
        return torch.cat([10 * q[:, None], rest], 1)


@pytest.mark.parametrize("norm,eps,tol", [("linf", 0.1, 0.01), ("l2", 0.3, 0.003)])
def test_step_size_halving_finds_an_interior_maximum(norm: str, eps: float, tol: float) -> None:
    # measured: Linf 0.004 / L2 0.0002 from c; with halving disabled 0.083 / 0.037
    g = torch.Generator().manual_seed(0)
    x = 0.2 + 0.6 * torch.rand(8, 1, 4, 4, generator=g, dtype=torch.float64)
    c = x + (torch.rand(x.shape, generator=g, dtype=torch.float64) - 0.5) * 0.1
    y = torch.zeros(8, dtype=torch.long)
    x_adv = apgd(_Bowl(c), x, y, eps=eps, norm=norm, n_iter=100, generator=g)
    assert float((x_adv - c).abs().max()) < tol


# --- stopping rules ---------------------------------------------------------------------------


def test_stop_plateau_exact_cost_on_a_linear_model() -> None:
    # _Biased is linear with a constant gradient sign: the first step reaches the best corner and
    # the loss never moves again. Checkpoints 22 and 41 both halve the step with no gain, so
    # every point stops at iteration index 41: 1 + 42 forward+backward per point instead of
    # 101 forward + 100 backward, and the result is the same corner. Its closest approach is
    # DLR = -(10 - ~0) / (10 - ~0) ~ -1, far below -PLATEAU_GUARD.
    model = _Biased().double().eval().requires_grad_(False)
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.zeros(6, dtype=torch.long)
    outs, costs = [], []
    for stop in (False, True):
        counter = CostCounter(model)
        gen = torch.Generator().manual_seed(1)
        outs.append(apgd(model, x, y, eps=EPS, n_iter=100, stop_plateau=stop, generator=gen))
        counter.close()
        costs.append(counter.snapshot())
    assert costs == [(6 + 6 * 101, 6 * 100), (6 + 6 * 43, 6 * 43)]
    assert torch.equal(outs[0], outs[1])


class _Well(nn.Module):
    """Logits ``(0, 10 (delta - |x - c|^2), -5, -5)`` with ``c = 0.5``: a point is misclassified
    only within ``sqrt(delta)`` of c, which APGD reaches late, after several step halvings, with
    loss gains far below 1% of the run's total: the case the plateau test alone gets wrong."""

    def __init__(self, delta: float) -> None:
        super().__init__()
        self.delta = delta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = ((x - 0.5) ** 2).flatten(1).sum(1)
        rest = torch.full((x.shape[0], 2), -5.0, dtype=x.dtype)
        return torch.cat([torch.zeros_like(q)[:, None], 10 * (self.delta - q)[:, None], rest], 1)


@pytest.mark.parametrize(
    "rule, constant", [("stop_plateau", "PLATEAU_GUARD"), ("stop_far", "STOP_FAR_DLR")]
)
def test_stopping_rules_keep_late_breaks_near_the_boundary(monkeypatch, rule, constant) -> None:
    # measured: plain APGD breaks 7 of the 8 points (late); each rule breaks the same 7 (their
    # untargeted DLR ~ -2 |x - c|^2 stays near 0, above both rules' distance thresholds);
    # without its threshold (set to -inf: every point counts as far) a rule stops them early
    g = torch.Generator().manual_seed(0)
    x = 0.5 + (torch.rand(8, 1, 4, 4, generator=g, dtype=torch.float64) - 0.5) * 0.1
    y = torch.zeros(8, dtype=torch.long)
    model = _Well(1e-5)

    def broken(stop: bool) -> torch.Tensor:
        gen = torch.Generator().manual_seed(1)
        x_adv = apgd(model, x, y, eps=EPS, n_iter=100, generator=gen, **{rule: stop})
        _in_threat_model(x_adv, x, EPS, "linf")
        return ~_robust(model, x_adv, y)

    plain = broken(False)
    assert int(plain.sum()) >= 6
    assert torch.equal(broken(True), plain)
    monkeypatch.setattr(APGD_MODULE, constant, float("-inf"))  # the test can fail
    assert int(broken(True).sum()) < int(plain.sum())


class _NearFar(nn.Module):
    """Logits ``(10, 10 x_000, 0, 0)``: nothing within eps 0.05 changes the label; a point with
    ``x_000 = 0.9`` stays near the boundary (DLR >= -(10 - 9.5) / 10), one with ``x_000 = 0.1``
    far from it (DLR <= -(10 - 1.5) / 10 = -0.85)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z1 = 10 * x.flatten(1)[:, 0]
        const = torch.zeros_like(z1)[:, None]
        return torch.cat([const + 10, z1[:, None], const, const], 1)


def test_skip_far_targets_exact_cost() -> None:
    # 3 near and 3 far points, APGD-CE then 3 targets of 10 iterations, nothing breaks: per run
    # and point 11 forward and 10 backward. Far points skip targets 2 and 3.
    model = _NearFar().double().eval()
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x[:, 0, 0, 0] = torch.tensor([0.9, 0.9, 0.9, 0.1, 0.1, 0.1], dtype=torch.float64)
    y = torch.zeros(6, dtype=torch.long)
    costs, outs = [], []
    for skip in (False, True):
        counter = CostCounter(model)
        gen = torch.Generator().manual_seed(0)
        kw = dict(eps=0.05, n_iter=10, n_target_classes=3, skip_far_targets=skip, generator=gen)
        outs.append(apgd_ce_t(model, x, y, **kw))
        counter.close()
        costs.append(counter.snapshot())
        _in_threat_model(outs[-1], x, 0.05, "linf")
        assert bool(_robust(model, outs[-1], y).all())
    assert costs[0] == (6 + 4 * 11 * 6, 4 * 10 * 6)
    assert costs[1] == (6 + 11 * (4 * 3 + 2 * 3), 10 * (4 * 3 + 2 * 3))


def test_stop_far_exact_cost() -> None:
    # 3 near points (DLR >= -0.05) and 3 far ones (DLR <= -0.85 < -STOP_FAR_DLR); the CE loss
    # grows with x_000, so the first step reaches the best corner and nothing breaks. Far
    # points stop at the first checkpoint (iteration 22): iterates 0..23, 24 forward and 24
    # backward each, instead of 101 and 100. The result is the same corner.
    model = _NearFar().double().eval()
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x[:, 0, 0, 0] = torch.tensor([0.9, 0.9, 0.9, 0.1, 0.1, 0.1], dtype=torch.float64)
    y = torch.zeros(6, dtype=torch.long)
    assert APGD_MODULE.checkpoints(100)[0] == 22 and APGD_MODULE.STOP_FAR_DLR < 0.85
    costs, outs = [], []
    for stop in (False, True):
        counter = CostCounter(model)
        gen = torch.Generator().manual_seed(0)
        outs.append(apgd(model, x, y, eps=0.05, n_iter=100, stop_far=stop, generator=gen))
        counter.close()
        costs.append(counter.snapshot())
        _in_threat_model(outs[-1], x, 0.05, "linf")
    assert costs[0] == (6 + 6 * 101, 6 * 100)
    assert costs[1] == (6 + 3 * 101 + 3 * 24, 3 * 100 + 3 * 24)
    assert torch.equal(outs[0], outs[1])


class _Wavy(nn.Module):
    """Logits ``(15, 3 sin(w_1 . x), 3 sin(w_2 . x), 3 sin(w_3 . x))`` with high frequencies:
    the loss oscillates within the eps ball, so APGD's iterates go up and down, and every point
    stays far from the boundary (untargeted DLR <= -(15 - 3) / (15 + 3) = -0.67 < -0.6)."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(3)
        self.register_buffer("w", 20 * torch.randn(16, 3, generator=gen, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        waves = 3 * torch.sin(x.flatten(1) @ self.w)
        return torch.cat([torch.full_like(waves[:, :1], 15.0), waves], 1)


def _hand_targeted_dlr(z: torch.Tensor, y: int, t: int) -> float:
    """-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) for one logit vector, by hand."""
    s = sorted(z.tolist(), reverse=True)
    return -(float(z[y]) - float(z[t])) / (s[0] - (s[2] + s[3]) / 2)


def _record_forwards(model: nn.Module) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], object]:
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    hook = model.register_forward_hook(
        lambda _m, inp, out: calls.append((inp[0].detach().clone(), out.detach().clone()))
    )
    return calls, hook


@pytest.mark.parametrize("targeted", [False, True])
def test_stop_far_keeps_the_best_iterate(targeted: bool) -> None:
    # Far points stop at w_1 = 22 (24 forwards per run). The iterate there is not the best one
    # for some of them: the result must be the highest-loss iterate of the run (over the three
    # targets' runs for APGD-T), found here from every forward the model saw, by hand.
    model = _Wavy().eval()
    y, n_runs = 0, 3 if targeted else 1
    last_differs = 0
    for seed in range(4):
        x = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(seed)).double()
        calls, hook = _record_forwards(model)
        gen = torch.Generator().manual_seed(seed)
        kw = dict(eps=0.05, n_iter=100, stop_far=True, generator=gen)
        if targeted:
            out = apgd_targeted(model, x, torch.tensor([y]), n_target_classes=3, **kw)
        else:
            out = apgd(model, x, torch.tensor([y]), **kw)
        hook.remove()
        assert len(calls) == 1 + 24 * n_runs  # the rule fired in every run
        clean = calls[0][1][0]
        targets = clean[1:].argsort(descending=True, stable=True) + 1
        best_loss, best_x = float("-inf"), []
        for r in range(n_runs):
            run = calls[1 + 24 * r : 1 + 24 * (r + 1)]

            def loss(z: torch.Tensor, t: int = int(targets[r])) -> float:
                if targeted:
                    return _hand_targeted_dlr(z, y, t)
                return float(torch.logsumexp(z, 0) - z[y])

            losses = [loss(z[0]) for _, z in run]
            last_differs += losses[-1] < max(losses)
            if max(losses) > best_loss:
                best_loss = max(losses)
                best_x = [xi for (xi, _), f in zip(run, losses, strict=True) if f == best_loss]
        _in_threat_model(out, x, 0.05, "linf")
        assert any(torch.equal(out, xi) for xi in best_x)
    assert last_differs > 0  # the case the test is for: x(w_1) is not x_max


def test_registry_entries() -> None:
    model = _Biased().eval()
    x, y = torch.rand(3, 1, 28, 28), torch.zeros(3, dtype=torch.long)
    assert get_attack("apgd-ce") is get_attack("apgd") and get_attack("apgd").base_loss == "ce"
    assert [get_attack(n).min_classes for n in ("apgd", "apgd-dlr", "apgd-t", "apgd-ce-t")] == [
        2,
        3,
        4,
        4,
    ]
    for name in ("apgd", "apgd-dlr", "apgd-t", "apgd-ce-t"):
        spec = get_attack(name)
        assert spec.iterative and spec.defaults["stop_plateau"] is False
        assert spec.defaults["stop_far"] is False
    assert "skip_far_targets" in get_attack("apgd-ce-t").defaults
    # the registry passes the loss by name: apgd-dlr is apgd with loss="dlr"
    a = get_attack("apgd-dlr").run(
        model, x, y, eps=EPS, n_iter=3, generator=torch.Generator().manual_seed(5)
    )
    b = apgd(model, x, y, eps=EPS, loss="dlr", n_iter=3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    # a harness loss built for DLR (plain or EOT-wrapped) means DLR; a joint loss is refused
    for harness_loss in (make_loss("dlr"), eot_loss("dlr", 3)):
        c = get_attack("apgd").run(
            model,
            x,
            y,
            eps=EPS,
            n_iter=3,
            loss=harness_loss,
            generator=torch.Generator().manual_seed(5),
        )
        assert torch.equal(a, c)
    with pytest.raises(APGDError, match="joint"):
        get_attack("apgd").run(model, x, y, eps=EPS, loss=make_loss("ce", joint=True))
    model.stochastic = True  # declared randomness: one lucky forward is no break
    with pytest.raises(EvalkitError, match="early_stop=False"):
        get_attack("apgd-t").run(model, x, y, eps=EPS, n_iter=2, early_stop=True)
    get_attack("apgd-t").run(model, x, y, eps=EPS, n_iter=2, early_stop=False)


def test_same_seed_same_result(apgd_robust_mlp, apgd_test_data) -> None:
    x, y = apgd_test_data
    a = apgd(
        apgd_robust_mlp,
        x[:32],
        y[:32],
        eps=EPS,
        n_iter=8,
        n_restarts=2,
        generator=torch.Generator().manual_seed(3),
    )
    b = apgd(
        apgd_robust_mlp,
        x[:32],
        y[:32],
        eps=EPS,
        n_iter=8,
        n_restarts=2,
        generator=torch.Generator().manual_seed(3),
    )
    assert torch.equal(a, b)


@pytest.mark.parametrize("targeted", [False, True])
def test_early_exit_leaves_unbroken_points_unchanged(
    apgd_robust_mlp, apgd_test_data, targeted
) -> None:
    model = copy.deepcopy(apgd_robust_mlp).double()
    x, y = apgd_test_data
    x, y = x[:100].double(), y[:100]
    outs, cost = {}, {}
    for early_stop in (True, False):
        gen = torch.Generator().manual_seed(7)
        counter = CostCounter(model)
        kw = dict(eps=EPS, n_iter=25, n_restarts=2, early_stop=early_stop, generator=gen)
        if targeted:
            outs[early_stop] = apgd_targeted(model, x, y, n_target_classes=3, **kw)
        else:
            outs[early_stop] = apgd(model, x, y, loss="dlr", **kw)
        counter.close()
        cost[early_stop] = counter.snapshot()
    robust = {k: _robust(model, v, y) for k, v in outs.items()}
    assert torch.equal(robust[True], robust[False])
    assert 0 < int(robust[True].sum()) < int(_robust(model, x, y).sum())  # some broken, some not
    r = robust[False]
    assert torch.equal(outs[True][r], outs[False][r])
    assert cost[True][0] < cost[False][0] and cost[True][1] < cost[False][1]


@pytest.mark.parametrize("classes,fn", [(2, "dlr"), (3, "t")])
def test_too_few_classes_for_dlr(classes: int, fn: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, classes)).eval()
    x = torch.rand(4, 1, 4, 4)
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="loss='ce'") as err:
        if fn == "dlr":
            apgd(model, x, y, eps=EPS, loss="dlr", n_iter=2)
        else:
            apgd_targeted(model, x, y, eps=EPS, n_iter=2)
    assert isinstance(err.value, APGDError)
    assert str(classes) in str(err.value)
    _in_threat_model(apgd(model, x, y, eps=EPS, loss="ce", n_iter=2), x, EPS, "linf")


def test_bad_arguments_are_one_line_errors() -> None:
    model = _Biased().eval()
    x, y = torch.rand(2, 1, 28, 28), torch.zeros(2, dtype=torch.long)
    for kw in ({"norm": "l1"}, {"loss": "cw"}, {"n_iter": 0}, {"eot_iter": 0}, {"rho": 0.0}):
        with pytest.raises(APGDError):
            apgd(model, x, y, eps=EPS, **kw)
    with pytest.raises(APGDError):
        apgd(model, x, y[:1], eps=EPS)


def _pyautoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    from pyautoattack import AutoAttack

    tracer = sys.gettrace()  # its dynamic-defense check ends with settrace(None)
    with torch.random.fork_rng():
        aa = AutoAttack(
            model,
            norm="Linf",
            eps=EPS,
            version="custom",
            attacks=["apgd-ce", "apgd-t"],
            seed=0,
            device="cpu",
        )
        aa.verbose = False
        aa.apgd.n_restarts = 1  # 'custom' keeps the constructor's 5; standard uses 1
        aa.apgd.n_iter = aa.apgd_targeted.n_iter = N_ITER_CROSS
        aa.apgd_targeted.n_target_classes = 9
        aa.apgd_targeted.n_restarts = 1
        try:
            x_adv = aa.run_standard_evaluation(x, y, batch_size=len(x))[0]
        finally:
            sys.settrace(tracer)
    return x_adv


@pytest.fixture(scope="module")
def apgd_cross(apgd_robust_mlp, apgd_test_data) -> dict[str, object]:
    """Both attack chains on the same points: robust flags and (forward, backward) counts."""
    model = apgd_robust_mlp
    x, y = apgd_test_data
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        counter = CostCounter(model)
        gen = torch.Generator().manual_seed(0)
        x_adv = apgd(model, x, y, eps=EPS, n_iter=N_ITER_CROSS, generator=gen)
        left = _robust(model, x_adv, y).nonzero().squeeze(1)
        x_adv[left] = apgd_targeted(
            model, x[left], y[left], eps=EPS, n_iter=N_ITER_CROSS, generator=gen
        )
        counter.close()
        ours = (_robust(model, x_adv, y), counter.snapshot(), x_adv)
        counter = CostCounter(model)
        x_aa = _pyautoattack(model, x, y)
        counter.close()
        theirs = (_robust(model, x_aa, y), counter.snapshot())
    finally:
        torch.set_num_threads(threads)
    return {"ours": ours, "theirs": theirs}


def test_robust_accuracy_matches_pyautoattack(apgd_cross, apgd_test_data) -> None:
    x, y = apgd_test_data
    ours, theirs = apgd_cross["ours"][0], apgd_cross["theirs"][0]
    n_ours, n_theirs = int(ours.sum()), int(theirs.sum())
    assert n_ours <= n_theirs + CROSS_TOL, (n_ours, n_theirs)  # never clearly weaker
    assert abs(n_ours - n_theirs) <= CROSS_TOL, (n_ours, n_theirs)
    assert 0.3 * N_CROSS < n_theirs < 0.6 * N_CROSS  # the model is robust but breakable
    _in_threat_model(apgd_cross["ours"][2], x, EPS, "linf")


def test_fewer_propagations_than_pyautoattack(apgd_cross) -> None:
    (f_ours, b_ours), (f_aa, b_aa) = apgd_cross["ours"][1], apgd_cross["theirs"][1]
    assert f_ours < f_aa and b_ours < b_aa, (f_ours, b_ours, f_aa, b_aa)


@pytest.fixture(scope="module")
def apgd_chain(apgd_robust_mlp, apgd_test_data) -> dict[bool, tuple[torch.Tensor, int]]:
    """apgd_ce_t plain and with the ``aa-fast`` preset's own options (its stopping rules as they
    ship, at the cross-check's iteration count) on the cross-check points: robust flags and
    forward+backward propagations, keyed by ``fast``."""
    model = apgd_robust_mlp
    x, y = apgd_test_data
    preset = dict(PRESETS["aa-fast"].attacks[0].options, n_iter=N_ITER_CROSS)
    rules = ("stop_plateau", "stop_far", "skip_far_targets")
    assert preset["stop_plateau"] and preset["stop_far"]  # what the preset ships
    out = {}
    for fast in (False, True):
        options = preset if fast else {**preset, **dict.fromkeys(rules, False)}
        counter = CostCounter(model)
        x_adv = apgd_ce_t(
            model, x, y, eps=EPS, generator=torch.Generator().manual_seed(0), **options
        )
        counter.close()
        _in_threat_model(x_adv, x, EPS, "linf")
        out[fast] = (_robust(model, x_adv, y), sum(counter.snapshot()))
    return out


def test_chain_with_stopping_rules_matches_pyautoattack(apgd_chain, apgd_cross) -> None:
    n_theirs = int(apgd_cross["theirs"][0].sum())
    for fast in (False, True):
        n_ours = int(apgd_chain[fast][0].sum())
        assert abs(n_ours - n_theirs) <= CROSS_TOL, (fast, n_ours, n_theirs)


def test_stopping_rules_keep_every_break_and_cut_cost(apgd_chain, apgd_cross) -> None:
    # measured with the aa-fast preset's options: the same 107 breaks at 0.44x the plain chain's
    # propagations (0.40x those of pyautoattack custom [apgd-ce, apgd-t] on the same points)
    (plain, cost_plain), (fast, cost_fast) = apgd_chain[False], apgd_chain[True]
    assert bool((fast <= plain).all())  # every point the plain chain breaks stays broken
    assert cost_fast < 0.5 * cost_plain, (cost_fast, cost_plain)
    assert cost_fast < 0.5 * sum(apgd_cross["theirs"][1])
