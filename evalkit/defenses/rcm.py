"""RCM: larger feature maps before average pooling (arXiv 2202.12435, MTandHJ/rcm).

Two ways to enlarge the last feature map, both inside the model so attacks keep acting on the
original input size and eps keeps its meaning:

1. **Upsample the input** (this plugin): ``at+rcm`` sets ``model.upsample`` to a factor of
   ``rcm_upsample`` (default 2, mode ``rcm_mode`` = nearest), e.g. ResNet-18 4x4 -> 8x8.
2. **Shrink stage strides** (an architecture option recorded at build time, not a plugin):
   ``evalkit train --defense at --arch resnet18 --strides 1122`` (8x8 map); VGG16 ``11222``
   (4x4), AlexNet ``1122`` (7x7). To combine strides with this plugin without upsampling pass
   ``rcm_upsample=1``.

The pooling study swaps average for max pooling with the arch option ``--pool max`` (RCM's
claim holds for average pooling only). Upsampling has no parameters, so the state_dict is the
plain architecture's and the checkpoint's ``defense_params`` rebuild it.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from evalkit.defenses.params import get_int
from evalkit.defenses.registry import Plugin, register
from evalkit.errors import EvalkitError

MODES = ("nearest", "bilinear", "bicubic")


def apply_rcm(model: nn.Module, params: dict[str, Any]) -> nn.Module:
    """Set the in-model input upsampling to ``rcm_upsample`` x (``rcm_mode``)."""
    factor = get_int(params, "rcm_upsample", minimum=1)
    mode = str(params.get("rcm_mode", "nearest"))
    if mode not in MODES:
        raise EvalkitError(f"defense parameter rcm_mode={mode!r} must be one of {', '.join(MODES)}")
    up = getattr(model, "upsample", None)
    if up is None or not hasattr(up, "factor"):
        raise EvalkitError(
            "RCM needs an evalkit model with an in-model upsample layer (build_model)"
        )
    up.factor = factor
    up.mode = mode
    return model


PLUGIN = register(
    Plugin(
        name="rcm",
        apply=apply_rcm,
        defaults={"rcm_upsample": 2, "rcm_mode": "nearest"},
        summary="larger feature maps before average pooling: in-model input upsampling (x2)",
    )
)
