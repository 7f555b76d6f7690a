"""Every architecture builds for 1- and 3-channel inputs and the requested class count."""

import pytest
import torch

from evalkit.errors import EvalkitError
from evalkit.models import ARCHS, build_model

SMALL = {"wrn34_10": {}, "wrn28_10": {}}


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("channels,size,classes", [(1, 28, 10), (3, 32, 100)])
def test_builds_and_runs(arch, channels, size, classes):
    model = build_model(arch, num_classes=classes, in_channels=channels).eval()
    with torch.no_grad():
        out = model(torch.rand(2, channels, size, size))
    assert out.shape == (2, classes)


def test_resnet18_layout_names():
    keys = set(build_model("resnet18", num_classes=10, in_channels=3).state_dict())
    for k in (
        "conv1.weight",
        "bn1.running_mean",
        "layer1.0.conv1.weight",
        "layer4.1.bn2.weight",
        "linear.weight",
        "linear.bias",
    ):
        assert k in keys
    assert not any(k.startswith("normalize") for k in keys)


@pytest.mark.parametrize(
    "arch,kwargs,size",
    [
        ("resnet18", {}, 4),
        ("resnet18", {"strides": "1122"}, 8),
        ("resnet18", {"upsample": 2}, 8),
        ("vgg16", {"strides": "11222"}, 4),
        ("alexnet", {"strides": "1122"}, 7),
        ("smallcnn", {}, 7),
    ],
)
def test_feature_map_size_before_pooling(arch, kwargs, size):
    ch, hw = (1, 28) if arch == "smallcnn" else (3, 32)
    model = build_model(arch, num_classes=10, in_channels=ch, **kwargs).eval()
    seen = {}

    def hook(module, inputs, output):
        seen["shape"] = inputs[0].shape

    model.pool.register_forward_hook(hook)
    model(torch.rand(1, ch, hw, hw))
    assert seen["shape"][-1] == size


def test_normalization_inside_model():
    plain = build_model("smallcnn", num_classes=10, in_channels=1)
    normed = build_model("smallcnn", num_classes=10, in_channels=1, mean=[0.5], std=[0.25])
    normed.load_state_dict(plain.state_dict())
    x = torch.rand(2, 1, 28, 28)
    plain.eval(), normed.eval()
    assert torch.allclose(normed(x), plain((x - 0.5) / 0.25), atol=1e-5)


def test_bad_arch_and_strides():
    with pytest.raises(EvalkitError, match="unknown arch"):
        build_model("resnet9000", num_classes=10, in_channels=3)
    with pytest.raises(EvalkitError, match="strides"):
        build_model("resnet18", num_classes=10, in_channels=3, strides="12")
