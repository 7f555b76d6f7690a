"""Behaviour of evalkit's attack library: lookup errors, mode handling, restarts, targeted PGD,
EOT and randomness detection. (Registry and eps-ball property tests: test_attack_registry.py;
best iterate and early stop: test_best_iterate.py.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from evalkit.attacks import (
    attack_mode,
    autoattack,
    eot_loss,
    get_attack,
    is_model_random,
    make_loss,
    needs_eot,
    pgd,
)
from evalkit.attacks.autoattack import build_autoattack
from evalkit.errors import EvalkitError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_unknown_attack_lists_known_ones():
    with pytest.raises(EvalkitError) as err:
        get_attack("pgd50")
    message = str(err.value)
    assert "\n" not in message
    for known in ("fgsm", "pgd", "cw", "cw_l2", "autoattack", "square", "foolbox:"):
        assert known in message


def test_unknown_foolbox_attack_is_one_line_error():
    with pytest.raises(EvalkitError) as err:
        get_attack("foolbox:NoSuchAttack")
    assert "\n" not in str(err.value) and "LinfPGD" in str(err.value)
    assert get_attack("FOOLBOX:linfpgd").name == "foolbox:LinfPGD"


def test_wrong_norm_is_user_error(atk_model, atk_data):
    x, y = atk_data
    with pytest.raises(EvalkitError, match="norm"):
        get_attack("fgsm").run(atk_model, x[:2], y[:2], eps=0.1, norm="l2")
    with pytest.raises(EvalkitError, match="norm"):
        get_attack("foolbox:LinfPGD").run(atk_model, x[:2], y[:2], eps=0.1, norm="l2")


def test_attack_mode_sets_eval_and_restores_everything():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Dropout(0.5))
    model.train()
    model[1].eval()  # a caller's mixed mode: frozen BatchNorm inside a training model
    model[0].bias.requires_grad_(False)
    with attack_mode(model):
        assert not any(m.training for m in model.modules())
        assert not any(p.requires_grad for p in model.parameters())
    assert model.training and model[0].training and model[2].training and not model[1].training
    assert model[0].weight.requires_grad and not model[0].bias.requires_grad
    with pytest.raises(RuntimeError), attack_mode(model):
        raise RuntimeError("attack failed")
    assert model.training and model[0].weight.requires_grad


def test_pgd_leaves_mode_and_parameter_grads_alone(atk_smallcnn, atk_data):
    x, y = atk_data
    atk_smallcnn.train()
    try:
        pgd(atk_smallcnn, x[:4], y[:4], 0.05, steps=2)
        assert atk_smallcnn.training
        assert all(p.grad is None for p in atk_smallcnn.parameters())
    finally:
        atk_smallcnn.eval()


def _fooled(model, x_adv, y):
    with torch.no_grad():
        return model(x_adv).argmax(1) != y


class FirstPixelThreshold(nn.Module):
    """Two classes; class 1 wins iff the first pixel exceeds 0.5 (CE on class 0 rises with it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1)[:, :1] - 0.5
        return torch.cat([torch.zeros_like(s), 5 * s], 1)


def test_restarts_keep_successes_and_never_lower_the_loss():
    """With 0 steps PGD is its random start: each restart fools a point at 0.5 with chance 1/2,
    so 8 restarts fool nearly all, keep the first restart's successes, and keep the best loss."""
    model = FirstPixelThreshold()
    x = torch.full((64, 1, 2, 2), 0.5)
    y = torch.zeros(64, dtype=torch.long)
    single = pgd(model, x, y, 0.2, steps=0, generator=torch.Generator().manual_seed(3))
    multi = pgd(model, x, y, 0.2, steps=0, restarts=8, generator=torch.Generator().manual_seed(3))
    assert (multi - x).abs().max() <= 0.2 + 1e-6
    f1, f8 = _fooled(model, single, y), _fooled(model, multi, y)
    assert (f8 | ~f1).all()  # every point fooled by the first restart stays fooled
    assert 16 < f1.sum() < 48 and f8.sum() >= 60
    ce = make_loss("ce")
    with torch.no_grad():
        l1, l8 = ce(model, single, y), ce(model, multi, y)
    assert (l8[~f8] >= l1[~f8]).all()


def test_targeted_pgd_reaches_the_target(atk_model, atk_data):
    x, y = atk_data
    target = (y + 1) % 10
    x_adv = pgd(
        atk_model,
        x,
        target,
        0.3,
        steps=20,
        targeted=True,
        generator=torch.Generator().manual_seed(0),
    )
    with torch.no_grad():
        hit = (atk_model(x_adv).argmax(1) == target).float().mean()
        before = (atk_model(x).argmax(1) == target).float().mean()
    assert hit > 0.5 and hit > before + 0.4


def test_l2_default_step_crosses_the_ball(atk_model, atk_data):
    x, y = atk_data
    x_adv = pgd(atk_model, x, y, 1.0, steps=10, norm="l2", random_start=False)
    size = (x_adv - x).flatten(1).norm(dim=1)
    assert size.max() <= 1.0 + 1e-5 and size.median() > 0.9  # 2.5*eps/steps reaches the rim


def test_same_generator_same_result(atk_model, atk_data):
    x, y = atk_data
    for name, opts in (
        ("pgd", {"steps": 2}),
        ("square", {"n_queries": 20}),
        ("foolbox:LinfPGD", {"steps": 2}),
    ):
        a = get_attack(name).run(
            atk_model, x[:8], y[:8], eps=0.1, generator=torch.Generator().manual_seed(9), **opts
        )
        b = get_attack(name).run(
            atk_model, x[:8], y[:8], eps=0.1, generator=torch.Generator().manual_seed(9), **opts
        )
        assert torch.equal(a, b), name


class NoisyLinear(nn.Module):
    """logits = W (x * m) with m ~ Bernoulli(p) / p, so E[logits] = W x (a toy SAP)."""

    stochastic = True

    def __init__(self, dim: int = 16, classes: int = 3, p: float = 0.5) -> None:
        super().__init__()
        self.weight = nn.Parameter(
            torch.randn(classes, dim, generator=torch.Generator().manual_seed(0))
        )
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        mask = (torch.rand_like(flat) < self.p).float() / self.p
        return (flat * mask) @ self.weight.t()


def _true_logit(model, x, y):
    return model(x).gather(1, y[:, None]).squeeze(1)


def _grad(loss, model, x, y):
    x = x.clone().requires_grad_(True)
    return torch.autograd.grad(loss(model, x, y).sum(), x)[0]


def test_eot_gradient_converges_to_expected_gradient():
    model = NoisyLinear()
    x = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0])
    expected = model.weight.detach()[y].view_as(x)  # d/dx of E[z_y] = W_y
    torch.manual_seed(0)
    one = _grad(_true_logit, model, x, y)
    many = _grad(eot_loss(_true_logit, 400), model, x, y)

    def err(g):
        return ((g - expected).norm() / expected.norm()).item()

    assert err(many) < 0.1 and err(many) < 0.2 * err(one)


def test_eot_value_is_mean_of_draws():
    model = NoisyLinear()
    x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([1, 2])
    torch.manual_seed(5)
    averaged = eot_loss(_true_logit, 5)(model, x, y)
    torch.manual_seed(5)
    draws = torch.stack([_true_logit(model, x, y) for _ in range(5)])
    torch.testing.assert_close(averaged, draws.mean(0))
    assert eot_loss("ce", 1) is not None
    with pytest.raises(ValueError):
        eot_loss("ce", 0)


def test_randomness_detection(atk_model, atk_data):
    x, _ = atk_data
    noisy = NoisyLinear(dim=28 * 28, classes=10)
    assert is_model_random(noisy, x[:4])
    assert not is_model_random(atk_model, x[:4])
    assert needs_eot(noisy, x[:4])[0]
    noisy.stochastic = False  # undeclared randomness is still caught
    use, why = needs_eot(noisy, x[:4])
    assert use and "differ" in why
    assert needs_eot(atk_model, x[:4]) == (False, "the model is deterministic")


def test_pgd_with_eot_beats_single_sample_on_stochastic_model():
    """On a randomised model the EOT gradient points the right way, so PGD with EOT lowers the
    expected true-class logit more than single-sample PGD does."""
    model = NoisyLinear(dim=16, classes=3, p=0.3)
    x = torch.rand(32, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    y = torch.randint(0, 3, (32,), generator=torch.Generator().manual_seed(4))

    def neg_logit(m, xs, ys):
        return -_true_logit(m, xs, ys)

    torch.manual_seed(0)
    plain = pgd(model, x, y, 0.2, steps=10, loss=neg_logit, random_start=False)
    eot = pgd(model, x, y, 0.2, steps=10, loss=eot_loss(neg_logit, 50), random_start=False)
    expected = model.weight.detach()

    def mean_logit(xa):
        return (xa.flatten(1) @ expected.t()).gather(1, y[:, None]).mean().item()

    assert mean_logit(eot) < mean_logit(plain)


def test_unknown_option_is_user_error_naming_the_options(atk_model, atk_data):
    x, y = atk_data
    with pytest.raises(EvalkitError, match="no option stesp.*steps"):
        get_attack("pgd").run(atk_model, x[:2], y[:2], eps=0.1, stesp=3)
    with pytest.raises(EvalkitError, match="n_iter"):
        get_attack("aa").run(atk_model, x[:2], y[:2], eps=0.1, iterations=3)
    with pytest.raises(EvalkitError, match="steps"):
        get_attack("foolbox:LinfPGD").run(atk_model, x[:2], y[:2], eps=0.1, stesp=3)


# --- AutoAttack: class counts, EOT on every gradient sub-attack, what ran ------------------

ALL_AA = "apgd-ce,apgd-dlr,apgd-t,fab,fab-t,square"
QUICK_AA = {"n_iter": 2, "n_restarts": 1, "n_queries": 10, "seed": 0}


def _few_class_model(classes: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    with torch.random.fork_rng():
        torch.manual_seed(classes)
        net = nn.Sequential(nn.Flatten(), nn.Linear(16, classes)).eval()
    x = torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = net(x).argmax(1)
    return net, x, y


def test_pyautoattack_itself_crashes_on_two_classes_with_dlr():
    """Why the adapter skips: pyautoattack indexes the 3rd-largest logit."""
    from pyautoattack import AutoAttack

    net, x, y = _few_class_model(2)
    aa = AutoAttack(net, attacks=["apgd-dlr"], version="custom", eps=0.02, seed=0)
    aa.verbose, aa.apgd.n_iter, aa.apgd.n_restarts = False, 2, 1
    with pytest.raises(IndexError):
        aa.run_standard_evaluation(x, y, batch_size=8)


@pytest.mark.parametrize(
    "classes,version,attacks,skipped",
    [
        (2, "custom", ALL_AA, {"apgd-dlr", "apgd-t"}),
        (3, "custom", ALL_AA, {"apgd-t"}),
        (2, "standard", None, {"apgd-t"}),
        (3, "plus", None, {"apgd-t"}),
        (2, "rand", None, {"apgd-dlr"}),
    ],
)
def test_autoattack_skips_what_needs_more_classes_and_says_why(classes, version, attacks, skipped):
    net, x, y = _few_class_model(classes)
    report: dict = {}
    x_adv = autoattack(net, x, y, 0.02, version=version, attacks=attacks, report=report, **QUICK_AA)
    assert set(report["skipped"]) == skipped
    assert all(f"the model has {classes}" in why for why in report["skipped"].values())
    assert not set(report["attacks"]) & skipped and report["attacks"]
    assert report["ran"] and set(report["ran"]) <= set(report["attacks"])
    assert report["version"] == version
    assert (x_adv - x).abs().max() <= 0.02 + 1e-6


def test_autoattack_sets_eot_on_every_gradient_sub_attack():
    std = build_autoattack(NoisyLinear(), 0.1, version="standard", eot_iter=5)
    assert std.apgd.eot_iter == 5 and std.apgd_targeted.eot_iter == 5
    plus = build_autoattack(NoisyLinear(), 0.1, version="plus", eot_iter=3)
    assert plus.apgd.eot_iter == 3 and plus.apgd_targeted.eot_iter == 3
    rand = build_autoattack(NoisyLinear(), 0.1, version="rand")
    assert rand.apgd.eot_iter == 20  # pyautoattack's own 'rand' setting is left alone
    with pytest.raises(EvalkitError, match="eot_iter"):
        build_autoattack(NoisyLinear(), 0.1, version="rand", eot_iter=0)


class Counting(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0
        self.stochastic = getattr(inner, "stochastic", False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x)


def test_apgd_t_really_averages_over_eot_draws_and_the_report_says_so():
    x = torch.rand(16, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 4, (16,), generator=torch.Generator().manual_seed(1))
    calls = {}
    for eot in (1, 4):
        model = Counting(NoisyLinear(dim=16, classes=4, p=0.7))
        report: dict = {}
        autoattack(model, x, y, 0.05, version="custom", attacks="apgd-t", n_iter=3,
                   eot_iter=eot, seed=0, report=report)  # fmt: skip
        calls[eot] = model.calls
        assert report["eot_iter"] == {"apgd-t": eot} and report["ran"] == ["apgd-t"]
    assert calls[4] > 2 * calls[1]
    report = {}
    autoattack(Counting(NoisyLinear(dim=16, classes=4)), x, y, 0.05, version="custom",
               attacks="apgd-ce,fab-t", eot_iter=3, report=report, **QUICK_AA)  # fmt: skip
    assert report["eot_iter"] == {"apgd-ce": 3, "fab-t": 1}
    assert any("FAB has no EOT" in note for note in report["notes"])


def test_dlr_loss_refuses_fewer_than_three_classes():
    logits = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    with pytest.raises(ValueError, match="3 classes.*'cw'"):
        make_loss("dlr")(lambda x: logits, torch.zeros(2), torch.tensor([0, 1]))
    three = torch.tensor([[3.0, 1.0, 0.0]])  # -(3 - 1) / (3 - 0)
    value = make_loss("dlr")(lambda x: three, torch.zeros(1), torch.tensor([0]))
    torch.testing.assert_close(value, torch.tensor([-2 / 3]))
