"""Speed opt-ins for attacking a model: reduced-precision autocast, channels-last memory and
``torch.compile``, as one wrapper that every attack and check sees.

Why a wrapper and not a flag inside each attack: the harness's gradient checks, the attacks, the
scoring passes and the cost counter must all run the same model, and a wrapper applied once
after loading guarantees it. What stays in fp32 on purpose:

* the **input and the perturbation**: the attacks' arithmetic (steps, projection onto the eps
  ball, [0, 1] clipping) runs on the fp32 tensors they own; autocast casts a copy inside the
  model's layers only;
* the **logits**, cast back to fp32 before any loss, margin or softmax is computed, so CE, DLR
  and CW margins are fp32 reductions (AMP's usual "loss in fp32" rule).

The risk is the one AutoAttack's zero-gradient check exists for: fp16 activations or gradients
that underflow give exact zeros, a gradient mask of the evaluator's own making. bf16 keeps
fp32's exponent range and rarely underflows; fp16 does. :func:`evalkit.evaluate` runs its
shattered-gradient check on the wrapped model, so a precision that zeroes the gradient is
refused before any attack, with the fix named (``tests/test_precision.py`` builds such a model).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from evalkit.errors import EvalkitError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Accelerated(nn.Module):
    """``model`` under ``torch.autocast(dtype)`` (None: full precision) with fp32 logits out,
    inputs made channels-last when asked. Module flags (auxiliary heads, stochastic layers)
    are found through it: they live on ``model``'s submodules."""

    def __init__(self, model: nn.Module, dtype: torch.dtype | None, channels_last: bool) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> Any:
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.dtype is None:
            return self.model(x)
        with torch.autocast(device_type=x.device.type, dtype=self.dtype):
            out = self.model(x)
        return out.float() if torch.is_tensor(out) else out


def check_precision(precision: str) -> str:
    """``fp32``/``bf16``/``fp16`` (case-insensitive), else a one-line error."""
    value = str(precision).strip().lower()
    if value not in PRECISIONS:
        raise EvalkitError(f"precision must be fp32, bf16 or fp16, not {precision!r}")
    return value


def accelerate(
    model: nn.Module,
    *,
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool | str = False,
) -> nn.Module:
    """``model`` with the opt-ins applied; the model itself when none is asked for.

    ``precision``: ``fp32`` (default), ``bf16`` or ``fp16`` autocast, fp32 inputs and logits.
    ``channels_last``: the model's 4-D weights and its inputs in channels-last memory format
    (faster convolutions on recent GPUs; like ``Module.to``, it changes the model's parameters
    in place, values untouched). ``compile``: ``True`` for ``torch.compile`` with its
    default backend (inductor, which needs a C++ compiler on CPU), or a backend name such as
    ``"eager"``. Raises :class:`EvalkitError` for an unknown precision.
    """
    dtype = PRECISIONS[check_precision(precision)]
    if isinstance(compile, str) and compile.strip().lower() in ("", "false", "no", "0", "none"):
        compile = False
    if dtype is None and not channels_last and not compile:
        return model
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile:
        backend = compile if isinstance(compile, str) else "inductor"
        # dynamic: compaction and early exit shrink the batch every few steps, and a static
        # graph would recompile for each size until dynamo's cache limit
        model = torch.compile(model, backend=backend, dynamic=True)  # type: ignore[assignment]
    return Accelerated(model, dtype, channels_last)
