"""Cross-checks of evalkit's attacks against independent implementations (Foolbox,
torchattacks, pyautoattack called directly, and a reference PGD written here)."""

from __future__ import annotations

import foolbox as fb
import pytest
import torch
import torchattacks

from evalkit.attacks import fgsm, get_attack, pgd
from evalkit.attacks.autoattack import build_autoattack

EPS = 0.1


pytestmark = pytest.mark.usefixtures("one_thread")


def test_fgsm_equals_foolbox_fgsm(atk_model, atk_data):
    x, y = atk_data
    ours = fgsm(atk_model, x, y, EPS)
    fmodel = fb.PyTorchModel(atk_model, bounds=(0, 1))
    _, theirs, _ = fb.attacks.FGSM()(fmodel, x, y, epsilons=EPS)
    assert (ours - x).abs().max() > EPS / 2  # the attack moved the points
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


@pytest.mark.parametrize("steps", [1, 2, 5])
def test_pgd_linf_equals_torchattacks_step_by_step(atk_model, atk_data, steps):
    x, y = atk_data
    alpha = EPS / 4
    torch.manual_seed(123)
    theirs = torchattacks.PGD(atk_model, eps=EPS, alpha=alpha, steps=steps, random_start=True)(x, y)
    torch.manual_seed(123)
    start = torch.empty_like(x).uniform_(-EPS, EPS)  # torchattacks' own draw, replayed
    ours = pgd(atk_model, x, y, EPS, steps=steps, step_size=alpha, init=start)
    assert (ours != x).any()
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


def test_pgd_l2_equals_torchattacks(atk_model, atk_data):
    x, y = atk_data
    eps, alpha, steps = 1.5, 0.3, 5
    theirs = torchattacks.PGDL2(atk_model, eps=eps, alpha=alpha, steps=steps, random_start=False)(
        x, y
    )
    ours = pgd(atk_model, x, y, eps, steps=steps, step_size=alpha, norm="l2", random_start=False)
    assert (ours - x).flatten(1).norm(dim=1).max() > eps / 2
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)


def _reference_margin_pgd(model, x, y, eps, alpha, steps, start):
    """PGD on max_{j!=y} z_j - z_y written independently of evalkit (one-hot masking)."""
    x_adv = torch.clamp(x + start, 0, 1)
    onehot = torch.nn.functional.one_hot(y, 10).bool()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        z = model(x_adv)
        other = z.masked_fill(onehot, -1e9).max(1).values
        margin = other - z[onehot]
        grad = torch.autograd.grad(margin.sum(), x_adv)[0]
        x_adv = x_adv.detach() + alpha * grad.sign()
        x_adv = torch.clamp(x + torch.clamp(x_adv - x, -eps, eps), 0, 1)
    return x_adv


def test_cw_inf_equals_reference_margin_pgd(atk_model, atk_data):
    x, y = atk_data
    spec = get_attack("cw")
    assert spec.defaults["steps"] == 30 and spec.base_loss == "cw"
    start = (torch.rand(x.shape, generator=torch.Generator().manual_seed(5)) * 2 - 1) * EPS
    ours = spec.run(atk_model, x, y, eps=EPS, norm="linf", init=start)
    ref = _reference_margin_pgd(atk_model, x, y, EPS, EPS / 4, 30, start)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)


def _robust_acc(model, x_adv, y) -> float:
    with torch.no_grad():
        return (model(x_adv).argmax(1) == y).float().mean().item()


def test_autoattack_adapter_equals_direct_pyautoattack(atk_model, atk_data, capsys):
    from pyautoattack import AutoAttack

    x, y = atk_data
    x, y = x[:32], y[:32]
    fast = {"n_iter": 10, "n_restarts": 1}
    ours = get_attack("autoattack").run(
        atk_model,
        x,
        y,
        eps=EPS,
        norm="linf",
        version="custom",
        attacks=["apgd-ce", "apgd-dlr"],
        seed=7,
        **fast,
    )
    assert capsys.readouterr().out == ""  # nothing printed on stdout
    aa = AutoAttack(atk_model, attacks=["apgd-ce", "apgd-dlr"], version="custom", eps=EPS, seed=7)
    aa.apgd.n_iter, aa.apgd.n_restarts = 10, 1
    direct, _ = aa.run_standard_evaluation(x, y, batch_size=len(x))
    clean = _robust_acc(atk_model, x, y)
    ours_acc, direct_acc = _robust_acc(atk_model, ours, y), _robust_acc(atk_model, direct, y)
    assert ours_acc < clean  # the attack did something
    assert ours_acc == direct_acc
    torch.testing.assert_close(ours, direct.clamp(0, 1), atol=1e-6, rtol=0)


def test_autoattack_versions_map_to_pyautoattack(atk_model):
    std = build_autoattack(atk_model, EPS, version="standard")
    assert std.attacks_to_run == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert std.apgd.n_restarts == 1 and std.square.n_queries == 5000
    plus = build_autoattack(atk_model, EPS, version="plus")
    assert set(plus.attacks_to_run) == {"apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"}
    assert plus.apgd.n_restarts == 5
    rand = build_autoattack(atk_model, EPS, version="rand")
    assert rand.attacks_to_run == ["apgd-ce", "apgd-dlr"] and rand.apgd.eot_iter == 20
    few = build_autoattack(atk_model, EPS, version="standard", num_classes=4)
    assert few.apgd_targeted.n_target_classes == 3 and few.fab.n_target_classes == 3
    for alias, version in (
        ("aa", "standard"),
        ("aa_plus", "plus"),
        ("aa_rand", "rand"),
        ("autoattack", "standard"),
    ):
        assert get_attack(alias).defaults["version"] == version


def test_autoattack_keeps_global_rng_and_model_mode(atk_smallcnn, atk_data):
    x, y = atk_data
    atk_smallcnn.train()
    state = torch.get_rng_state()
    get_attack("aa").run(
        atk_smallcnn,
        x[:4],
        y[:4],
        eps=EPS,
        version="custom",
        attacks="apgd-ce",
        n_iter=2,
        n_restarts=1,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(torch.get_rng_state(), state)
    assert atk_smallcnn.training and atk_smallcnn.layer1[1].training
    atk_smallcnn.eval()


def test_cw_l2_matches_foolbox_carlini_wagner(atk_model, atk_data):
    """Same algorithm and settings as Foolbox's L2CarliniWagnerAttack: both fool the points and
    find perturbations of the same size (Foolbox falls back to an all-zero image where it
    fails, so only points both fool are compared)."""
    x, y = atk_data
    with torch.no_grad():
        keep = atk_model(x).argmax(1) == y
    x, y = x[keep][:16], y[keep][:16]
    opts = {"steps": 100, "binary_search_steps": 4, "initial_const": 1.0}
    ours = get_attack("cw_l2").run(atk_model, x, y, eps=float("inf"), norm="l2", **opts)
    with torch.no_grad():
        fooled = atk_model(ours).argmax(1) != y
    assert fooled.float().mean() >= 0.9
    fmodel = fb.PyTorchModel(atk_model, bounds=(0, 1))
    attack = fb.attacks.L2CarliniWagnerAttack(steps=100, binary_search_steps=4, initial_const=1.0)
    theirs, _, ok = attack(fmodel, x, y, epsilons=None)
    both = fooled & ok
    assert both.sum() >= 0.8 * len(y)
    ours_norm = (ours - x)[both].flatten(1).norm(dim=1)
    theirs_norm = (theirs - x)[both].flatten(1).norm(dim=1)
    assert abs(ours_norm.median() / theirs_norm.median() - 1) < 0.05
    # with a finite eps the result is projected into the ball
    bounded = get_attack("cw_l2").run(
        atk_model, x, y, eps=0.5, norm="l2", steps=10, binary_search_steps=1
    )
    assert (bounded - x).flatten(1).norm(dim=1).max() <= 0.5 + 1e-6
