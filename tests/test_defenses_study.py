"""Slow CPU studies (``pytest -m slow tests/test_defenses_study.py -s``) of the adaptive
evaluations the seed defenses need, on the bundled Fashion-MNIST subset with the small CNN:

* SAP looks more robust under plain PGD (one stochastic gradient per step) than under EOT-PGD
  (the loss averaged over several draws per step): the obfuscation Athalye et al. broke.
* For CAS the joint loss (final + beta * mean head CE, beta = 2) is at least as strong as CE on
  the final logits alone.

Numbers are printed (run with ``-s``); they are measured, not asserted against constants.
"""

from __future__ import annotations

import pytest
import torch

from evalkit.attacks import make_loss, pgd
from evalkit.attacks.eot import eot_loss
from evalkit.checkpoint import load_model
from evalkit.data import load_split
from evalkit.training import TrainConfig, train

pytestmark = pytest.mark.slow

N_TEST = 150


@pytest.fixture(scope="module")
def test_set() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_split("fashion-mnist-mini", "test").first(N_TEST)
    return data.float_batch(slice(0, N_TEST)), torch.as_tensor(data.y[:N_TEST])


def mc_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, draws: int = 1) -> float:
    """Accuracy of the prediction averaged over ``draws`` forward passes (softmax mean), as the
    SAP paper predicts with Monte Carlo samples."""
    with torch.no_grad():
        probs = torch.stack([model(x).softmax(1) for _ in range(draws)]).mean(0)
    return float((probs.argmax(1) == y).float().mean())


def test_sap_plain_pgd_overstates_robustness_vs_eot(tmp_path_factory, test_set) -> None:
    out = tmp_path_factory.mktemp("sap")
    ckpt = train(
        TrainConfig(
            defense="standard",
            epochs=4,
            out=str(out),
            n_train=3000,
            val_size=100,
            arch_kwargs={"width": 8},
            progress=False,
            seed=0,
        )
    )
    plain, _ = load_model(ckpt)
    sap, meta = load_model(ckpt, defense="sap")
    assert meta.defense == "sap"
    x, y = test_set
    eps, steps = 0.05, 10
    torch.manual_seed(0)
    clean_plain = mc_accuracy(plain, x, y)
    clean_sap = mc_accuracy(sap, x, y, draws=10)
    gen = torch.Generator().manual_seed(1)
    acc_undefended = mc_accuracy(plain, pgd(plain, x, y, eps, steps=steps, generator=gen), y)
    gen = torch.Generator().manual_seed(1)
    x_plain = pgd(sap, x, y, eps, steps=steps, generator=gen)
    gen = torch.Generator().manual_seed(1)
    x_eot = pgd(sap, x, y, eps, steps=steps, generator=gen, loss=eot_loss("ce", 8))
    acc_plain = mc_accuracy(sap, x_plain, y, draws=10)
    acc_eot = mc_accuracy(sap, x_eot, y, draws=10)
    print(
        f"\nSAP study (smallcnn w8, standard 4 ep on 3000, n={N_TEST}, eps={eps}, PGD-{steps}): "
        f"clean {clean_plain:.3f} (SAP {clean_sap:.3f}); undefended PGD {acc_undefended:.3f}; "
        f"SAP plain PGD {acc_plain:.3f}; SAP EOT-8 PGD {acc_eot:.3f}"
    )
    assert acc_plain > acc_eot


def test_cas_joint_loss_attack_is_at_least_as_strong(tmp_path_factory, test_set) -> None:
    out = tmp_path_factory.mktemp("cas")
    ckpt = train(
        TrainConfig(
            defense="at+cas",
            epochs=3,
            out=str(out),
            n_train=2000,
            val_size=100,
            attack_steps=5,
            arch_kwargs={"width": 8},
            progress=False,
            seed=0,
        )
    )
    model, meta = load_model(ckpt)
    x, y = test_set
    eps, steps = 8 / 255, 20
    clean = mc_accuracy(model, x, y)
    results = {}
    for name, loss in (("ce", make_loss("ce")), ("joint", make_loss("ce", joint=True, beta=2.0))):
        gen = torch.Generator().manual_seed(2)
        results[name] = mc_accuracy(
            model, pgd(model, x, y, eps, steps=steps, loss=loss, generator=gen), y
        )
    print(
        f"\nCAS study (smallcnn w8, at+cas 3 ep on 2000, n={N_TEST}, eps=8/255, PGD-{steps}): "
        f"clean {clean:.3f}; PGD-CE {results['ce']:.3f}; PGD-joint(beta=2) {results['joint']:.3f}"
    )
    assert results["joint"] <= results["ce"]
