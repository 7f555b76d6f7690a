"""JPEG compression of the input (Das et al. 2017; Guo et al., ICLR 2018), a test-time input
transformation, through torchvision's libjpeg bindings (``torchvision.io.encode_jpeg`` /
``decode_jpeg``): each image is rounded to uint8, encoded at ``jpeg_quality`` and decoded.

The uint8 round trip has no gradient (a shattered gradient, Athalye et al. 2018): a plain
gradient attack sees zero; the part declares itself non-differentiable with the identity
backward (BPDA), as Athalye et al. attacked it. Default quality 75 (Guo et al.). Images need 1
or 3 channels; encoding runs on the CPU (Pillow, the same libjpeg, where torchvision lacks
its codecs: torchvision 0.29 deprecates them in favour of TorchCodec).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn as nn

from evalkit.defenses.params import get_int
from evalkit.defenses.registry import Plugin, register
from evalkit.defenses.transforms import prepend
from evalkit.errors import EvalkitError


def _round_trip(u8: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode and decode a uint8 batch (N, C, H, W) with libjpeg: torchvision's batched codec
    (its deprecation notice pointing to TorchCodec silenced here), else Pillow's per image."""
    try:
        from torchvision.io import decode_jpeg, encode_jpeg
    except ImportError:  # pragma: no cover - a torchvision without its image codecs
        return _round_trip_pillow(u8, quality)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
        return torch.stack(decode_jpeg(encode_jpeg(list(u8), quality=quality)))


def _round_trip_pillow(u8: torch.Tensor, quality: int) -> torch.Tensor:  # pragma: no cover
    import io

    import numpy as np
    from PIL import Image

    out = []
    for img in u8.numpy():
        arr = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
        dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
        out.append(torch.from_numpy(dec[None] if dec.ndim == 2 else dec.transpose(2, 0, 1).copy()))
    return torch.stack(out)


class JPEG(nn.Module):
    """Encode and decode each (C, H, W) image in [0, 1] as JPEG at ``quality`` (1-100)."""

    def __init__(self, quality: int = 75) -> None:
        super().__init__()
        if not 1 <= int(quality) <= 100:
            raise EvalkitError(f"JPEG quality must be in 1..100, not {quality}")
        self.quality = int(quality)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise EvalkitError(
                f"JPEG needs images of shape (N, 1 or 3, H, W), not {tuple(x.shape)}"
            )
        with torch.no_grad():
            u8 = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
            out = _round_trip(u8, self.quality)
        return out.to(x.device, x.dtype) / 255.0

    def extra_repr(self) -> str:
        return f"quality={self.quality}"


def apply_jpeg(model: nn.Module, params: dict[str, Any]) -> nn.Module:
    return prepend(model, JPEG(get_int(params, "jpeg_quality", minimum=1)))


PLUGIN = register(
    Plugin(
        name="jpeg",
        apply=apply_jpeg,
        test_time_only=True,
        any_model=True,
        defaults={"jpeg_quality": 75},
        summary="JPEG compression of the input (test time; attacked with BPDA)",
    )
)
