"""The extension guide's recipes work as written: a defense added by registering one module is
accepted in SPECs, applied to a model, and makes the harness adapt (EOT + Monte-Carlo scoring)."""

from __future__ import annotations

import torch
import torch.nn as nn

import evalkit
from evalkit.defenses import parse_spec
from evalkit.defenses.registry import Plugin, apply_defenses, register


class _Noise(nn.Module):
    stochastic = True

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.sigma * torch.randn_like(x)


def _apply(model: nn.Module, params: dict) -> nn.Module:
    return nn.Sequential(_Noise(float(params.get("toy_sigma", 0.3))), model)


register(Plugin(name="toynoise", apply=_apply, test_time_only=True, defaults={"toy_sigma": 0.3}))


def test_a_registered_defense_is_usable_in_specs_and_adapted_to():
    spec = parse_spec("at+toynoise")
    assert spec.plugins == ("toynoise",)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    model = apply_defenses(net, parse_spec("toynoise"))
    x = torch.rand(12, 1, 4, 4)
    y = torch.zeros(12, dtype=torch.long)
    s = evalkit.evaluate(
        model, (x, y), eps="0.1", attacks="fgsm", mc_draws=4, progress=False, echo=False
    ).summary
    assert s["scoring"]["semantics"] == "monte-carlo"
    assert s["traits"]["stochastic"] is True
    assert any(a["name"] == "eot" for a in s["adaptive"])
