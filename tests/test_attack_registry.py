"""The attack registry: typed specs, keyword calls, self-registration (a toy attack added here
the way an extension would add one), option and norm checks, defaults equal to the functions'
own, and the eps-ball property for every registered attack (the list comes from the registry,
not from this file)."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evalkit.attacks import (
    AttackLoss,
    attack_names,
    describe_attacks,
    fgsm,
    get_attack,
    make_loss,
    pgd,
    register_attack,
)
from evalkit.errors import EvalkitError

pytestmark = pytest.mark.usefixtures("one_thread")


# --- a toy attack, registered in this module only (the extension guide's recipe) -------------


@register_attack(
    "toy_step",
    norms=("linf",),
    white_box=True,
    base_loss="ce",
    description="toy: one signed-gradient step of size scale * eps",
    aliases=("toy",),
)
def toy_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    loss: AttackLoss | str = "ce",
    scale: float = 1.0,
) -> torch.Tensor:
    """``clip(x + scale * eps * sign(grad loss))`` with ``0 <= scale <= 1``."""
    loss_fn = make_loss(loss) if isinstance(loss, str) else loss
    xg = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_fn(model, xg, y).sum(), xg)
    return (x + scale * eps * grad.sign()).clamp(0, 1).detach()


def test_a_toy_attack_registers_itself_and_runs_by_keyword(atk_model, atk_data):
    x, y = atk_data
    spec = get_attack("toy")
    assert spec is get_attack("TOY_STEP") and spec.name == "toy_step" in attack_names()
    assert spec.defaults == {"scale": 1.0} and spec.base_loss == "ce" and spec.white_box
    assert "toy_step (also: toy): toy: one signed-gradient step" in describe_attacks()
    # with scale 1 and CE it is FGSM, computed independently
    torch.testing.assert_close(spec.run(atk_model, x, y, eps=0.1), fgsm(atk_model, x, y, 0.1))
    half = spec.run(atk_model, x, y, eps=0.1, scale=0.5)
    assert (half - x).abs().max() <= 0.05 + 1e-6
    # an explicit loss replaces the base loss
    seen = []

    def margin(model, xs, ys):
        seen.append(len(xs))
        return make_loss("cw")(model, xs, ys)

    spec.run(atk_model, x[:4], y[:4], eps=0.1, loss=margin)
    assert seen == [4]
    with pytest.raises(EvalkitError, match="toy_step' has no option scal .*scale"):
        spec.run(atk_model, x, y, eps=0.1, scal=0.5)
    with pytest.raises(EvalkitError, match="norm linf, not 'l2'"):
        spec.run(atk_model, x, y, eps=0.1, norm="l2")


def test_registration_mistakes_fail_at_import_time():
    def other(model, x, y, eps, *, steps: int = 1):
        return x

    with pytest.raises(ValueError, match="already registered"):
        register_attack("pgd", norms=("linf",), white_box=True, base_loss="ce", description="")(
            other
        )
    with pytest.raises(ValueError, match="has no option stesp"):
        register_attack(
            "other1", norms=("linf",), white_box=True, base_loss="ce", description="", stesp=2
        )(other)
    with pytest.raises(ValueError, match="keep_best and early_stop"):
        register_attack(
            "other2",
            norms=("linf",),
            white_box=True,
            base_loss="ce",
            description="",
            iterative=True,
        )(other)
    assert "other1" not in attack_names() and "other2" not in attack_names()


def test_eps_must_be_a_number_at_least_zero(atk_model, atk_data):
    x, y = atk_data
    for bad in (float("nan"), -0.1):
        with pytest.raises(EvalkitError, match="eps >= 0"):
            get_attack("fgsm").run(atk_model, x[:2], y[:2], eps=bad)


def test_unknown_names_are_one_line_errors_listing_what_exists():
    with pytest.raises(EvalkitError) as err:
        get_attack("pgd50")
    message = str(err.value)
    assert "\n" not in message and "foolbox:AttackName" in message
    for name in (*attack_names(), "cw", "aa"):
        assert name in message
    assert get_attack("FOOLBOX:linfpgd") is get_attack("foolbox:LinfPGD")


# Entries whose defaults differ from their function's, and why (keep this list short).
OVERRIDES = {
    ("aa_plus", "version"): "the entry is AutoAttack's 'plus' version",
    ("aa_rand", "version"): "the entry is AutoAttack's 'rand' version",
}


@pytest.mark.parametrize("name", attack_names())
def test_defaults_are_the_functions_own(name):
    spec = get_attack(name)
    params = inspect.signature(spec.fn.__wrapped__).parameters
    for key, value in spec.defaults.items():
        if (name, key) in OVERRIDES:
            assert value != params[key].default
        else:
            assert value == params[key].default, (name, key)
    assert (spec.white_box or spec.base_loss is None) and spec.min_classes >= 2
    assert spec.iterative == ("keep_best" in spec.defaults)


def test_pgd_function_and_registry_agree_on_steps(atk_model, atk_data):
    x, y = atk_data
    spec = get_attack("pgd")
    assert spec.defaults["steps"] == inspect.signature(pgd).parameters["steps"].default == 10
    calls = []

    def counting_loss(model, xs, ys):
        calls.append(1)
        return make_loss("ce")(model, xs, ys)

    spec.run(atk_model, x[:4], y[:4], eps=0.1, loss=counting_loss)
    assert len(calls) == 10
    calls.clear()
    spec.run(atk_model, x[:4], y[:4], eps=0.1, loss=counting_loss, steps=3)
    assert len(calls) == 3


def test_aliases_kept_from_earlier_versions():
    for alias, name in {
        "cw": "cw_inf",
        "cw_inf": "cw_inf",
        "aa": "autoattack",
        "autoattack": "autoattack",
        "aa_plus": "aa_plus",
        "aa_rand": "aa_rand",
        "square": "square",
        "cw_l2": "cw_l2",
        "fgsm": "fgsm",
        "pgd": "pgd",
    }.items():
        assert get_attack(alias).name == name
    assert get_attack("aa_plus").defaults["version"] == "plus"
    assert get_attack("aa_rand").defaults["version"] == "rand"


def test_black_box_attacks_say_so():
    assert not get_attack("square").white_box
    assert not get_attack("foolbox:BoundaryAttack").white_box
    assert not get_attack("foolbox:HopSkipJumpAttack").white_box
    assert get_attack("foolbox:LinfPGD").white_box
    assert get_attack("foolbox:L2CarliniWagnerAttack").white_box


# --- every attack stays in the eps ball and in [0, 1] ----------------------------------------

#: Option values that make any attack quick; applied where the attack has the option.
QUICK = {"steps": 3, "n_iter": 2, "n_restarts": 1, "n_queries": 10, "binary_search_steps": 2}
#: Typical eps per norm for 1x28x28 images (the drawn factor scales it).
SCALE = {"linf": 0.1, "l2": 1.5, "l1": 10.0}
#: pyautoattack's 'standard' L1 schedule (APGD with large-eps steps) ignores most of n_iter and
#: takes ~5 s a call here; aa_plus and aa_rand cover the same L1 path of the adapter quickly.
SLOW = {("autoattack", "l1")}
CASES = [
    pytest.param(n, norm, marks=[pytest.mark.slow] if (n, norm) in SLOW else [])
    for n in attack_names()
    for norm in get_attack(n).norms
]
CASES.append(pytest.param("foolbox:LinfPGD", "linf"))


def _size(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.flatten(1)
    return {"linf": flat.abs().amax(1), "l2": flat.norm(dim=1), "l1": flat.abs().sum(1)}[norm]


@pytest.mark.parametrize("name,norm", CASES)
@settings(
    max_examples=2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(factor=st.floats(0.05, 5.0), seed=st.integers(0, 2**31 - 1), edges=st.booleans())
def test_every_attack_stays_in_the_ball_and_unit_range(
    atk_smallcnn, name, norm, factor, seed, edges
):
    spec = get_attack(name)
    eps = SCALE[norm] * factor
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 1, 28, 28, generator=gen)
    if edges:  # saturated pixels, where clipping and projection interact
        x = (x > 0.5).float()
    with torch.no_grad():
        y = atk_smallcnn(x).argmax(1)  # correctly classified, so every attack has work to do
    options = {k: v for k, v in QUICK.items() if k in spec.defaults}
    x_adv = spec.run(atk_smallcnn, x, y, eps=eps, norm=norm, generator=gen, **options)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert torch.isfinite(x_adv).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert _size(x_adv - x, norm).max() <= eps * (1 + 1e-5) + 1e-6
