"""Where CAS and CIFS sit by default, on every built-in architecture: in its last stage, as the
papers place them (ResNet-18: both blocks of layer4; VGG16: the last conv stage; WRN: the last
block of block3 and the final features), and the last site sees the last convolution's output
(nothing but pooling and the classifier after it)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from evalkit.defenses import apply_defenses, parse_spec
from evalkit.defenses.cas import CASBlock
from evalkit.defenses.cifs import CIFSBlock
from evalkit.defenses.sites import paper_sites
from evalkit.models import build_model

# the last stage of each architecture, by the papers' placement (docs/defenses.md)
LAST_STAGE = {
    "smallcnn": {"layer4"},
    "resnet18": {"layer4.0", "layer4.1"},
    "preact_resnet18": {"layer4.0", "layer4.1"},
    "wrn28_10": {"block3.layer.3.relu1", "relu"},
    "vgg16": {"layer5.0", "layer5.1", "layer5.2"},
    "alexnet": {"layer4", "layer5"},
}
SMALL = {"smallcnn": {"width": 4}, "resnet18": {"width": 4}, "preact_resnet18": {"width": 4}}


def _build(arch: str) -> nn.Module:
    torch.manual_seed(0)
    ch = 1 if arch == "smallcnn" else 3
    return build_model(arch, num_classes=10, in_channels=ch, **SMALL.get(arch, {}))


def _forward_order(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Names of the modules in the order their forward finished."""
    order: list[str] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, _o, name=name: order.append(name))
        for name, m in model.named_modules()
        if name
    ]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    return order


@pytest.mark.parametrize("arch", sorted(LAST_STAGE))
@pytest.mark.parametrize("plugin", ["cas", "cifs"])
def test_default_sites_are_the_last_stage(arch: str, plugin: str) -> None:
    model = _build(arch)
    sites = paper_sites(model)
    assert set(sites) == LAST_STAGE[arch]
    wrapped = apply_defenses(model, parse_spec(f"at+{plugin}", {}))
    block = CASBlock if plugin == "cas" else CIFSBlock
    names = [n for n, m in wrapped.named_modules() if isinstance(m, block)]
    assert names == list(sites)
    ch = 1 if arch == "smallcnn" else 3
    size = 28 if arch == "smallcnn" else 32
    order = _forward_order(wrapped, torch.rand(2, ch, size, size))
    convs = [n for n, m in wrapped.named_modules() if isinstance(m, nn.Conv2d)]
    last_conv = max(order.index(c) for c in convs)
    # the last masking module runs after the last convolution: it sees the final features
    assert order.index(names[-1]) > last_conv


def test_cifs_probe_kinds_follow_the_official_resnet() -> None:
    """Non-linear probes before the last site, a linear probe at the last site."""
    for arch, want in (("resnet18", [True, False]), ("smallcnn", [False])):
        model = apply_defenses(_build(arch), parse_spec("at+cifs", {}))
        kinds = [
            isinstance(m.probe.net, nn.Sequential)
            for m in model.modules()
            if isinstance(m, CIFSBlock)
        ]
        assert kinds == want
