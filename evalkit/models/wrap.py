"""Adapting an outside model to what evalkit attacks: ``[0, 1]`` images in, logits out.

Every evalkit attack feeds images in ``[0, 1]`` of shape ``(N, C, H, W)`` and reads **logits**
``(N, classes)``: cross-entropy, the CW margin and DLR are all computed from them. Two things
commonly break that contract in models brought from elsewhere, and both make robust accuracy
look better than it is if left alone:

* the model expects *normalized* input: :func:`wrap` with ``mean``/``std`` puts a
  :class:`~evalkit.models.layers.Normalize` in front, so the attacker's eps stays in pixel units;
* the model returns probabilities (a trailing softmax), a tuple, or a dict:
  :func:`check_outputs` runs a probe batch and refuses (one-line :class:`EvalkitError` naming the
  fix) or, when asked with ``output=...``, selects the logits.

``output`` options (the same strings everywhere):

* ``"auto"``/``"logits"``: the model returns a logits tensor; anything else is refused;
* ``"first"``: the model returns a tuple/list whose element 0 is the logits;
* ``"key:NAME"``: the model returns a dict (or an object with attribute ``NAME``) holding them;
* ``"log"``: the model returns probabilities; evalkit uses ``log(p)``. This is sound in exact
  arithmetic: if ``p = softmax(z)`` then ``log p = z - logsumexp(z)``, a per-row shift of ``z``,
  and CE, the CW margin and DLR are all invariant to per-row shifts, so every loss and the
  argmax are unchanged. It is *not* sound numerically: once float32 rounds ``p_y`` to 1 (or
  another ``p_j`` to 0) the gradient through the softmax vanishes, which masks gradients and
  overstates robustness. Prefer removing the softmax; use ``"log"`` only when you cannot, and
  add a gradient-free attack (Square) to the evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from evalkit.errors import EvalkitError
from evalkit.models.layers import Normalize
from evalkit.utils.mode import model_mode

OUTPUT_HELP = "output='first' (tuple/list), output='key:NAME' (dict), output='log' (probabilities)"
_PROB_ATOL = 1e-4


def parse_output(output: str) -> tuple[str, str | None]:
    """``"key:logits"`` -> ``("key", "logits")``; validates the mode name."""
    text = (output or "auto").strip()
    if text.startswith("key:"):
        name = text[4:]
        if not name:
            raise EvalkitError("output='key:' needs a key name, e.g. output='key:logits'")
        return "key", name
    if text not in ("auto", "logits", "first", "log"):
        raise EvalkitError(
            f"unknown output mode {output!r} (use auto, logits, first, log or key:NAME)"
        )
    return text, None


def select_logits(out: Any, output: str = "auto") -> torch.Tensor:
    """The logits tensor inside a model's raw output ``out``, following ``output``.

    Raises :class:`EvalkitError` when ``out`` is a tuple/list/dict and ``output`` does not say
    which element holds the logits.
    """
    mode, key = parse_output(output)
    if mode == "first":
        if not isinstance(out, (tuple, list)) or not out:
            raise EvalkitError(
                f"output='first' but the model returned {type(out).__name__}, not a tuple/list"
            )
        out = out[0]
    elif mode == "key":
        if isinstance(out, dict):
            if key not in out:
                raise EvalkitError(
                    f"output='key:{key}' but the model's dict has keys {sorted(map(str, out))}"
                )
            out = out[key]
        elif hasattr(out, key):  # HF-style output objects
            out = getattr(out, key)
        else:
            raise EvalkitError(
                f"output='key:{key}' but the model returned {type(out).__name__} without {key!r}"
            )
    if isinstance(out, dict):
        raise EvalkitError(
            f"the model returns a dict with keys {sorted(map(str, out))}; evalkit needs a logits "
            f"tensor: pick one with output='key:NAME'"
        )
    if isinstance(out, (tuple, list)):
        raise EvalkitError(
            f"the model returns a {type(out).__name__} of {len(out)}; evalkit needs a logits "
            "tensor: pass output='first' if element 0 holds the logits"
        )
    if not isinstance(out, torch.Tensor):
        raise EvalkitError(
            f"the model returns {type(out).__name__}; evalkit needs a logits tensor ({OUTPUT_HELP})"
        )
    if mode == "log":
        tiny = torch.finfo(out.dtype).tiny if out.is_floating_point() else 1e-38
        out = torch.log(out.clamp_min(tiny))
    return out


class WrappedModel(nn.Module):
    """``Normalize`` (optional) -> ``model`` -> logits selection.

    Input ``(N, C, H, W)`` in ``[0, 1]``; output ``(N, classes)`` logits. The wrapped model is
    reachable as ``.model`` (its ``state_dict`` keys gain the prefix ``model.``).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        output: str = "auto",
    ) -> None:
        super().__init__()
        parse_output(output)
        self.normalize = Normalize(mean, std) if mean is not None else None
        #: the exact values (the buffers are float32), recorded by save_checkpoint
        self.norm_values: tuple[list[float], list[float]] | None = (
            ([float(v) for v in mean], [float(v) for v in std]) if mean is not None else None  # type: ignore[union-attr]
        )
        self.model = model
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize is not None:
            x = self.normalize(x)
        return select_logits(self.model(x), self.output)

    def extra_repr(self) -> str:
        return f"output={self.output!r}"


def wrap(
    model: nn.Module,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    output: str = "auto",
) -> nn.Module:
    """Make ``model`` take ``[0, 1]`` images and return logits.

    ``mean``/``std`` (one value per channel, both or neither): the model expects
    ``(x - mean) / std``; a :class:`Normalize` is put in front so attacks keep working in pixel
    space. ``output``: see the module docstring. With neither, ``model`` is returned unchanged.
    Raises :class:`EvalkitError` on a bad ``output`` or mismatched ``mean``/``std``.
    """
    mode, _ = parse_output(output)
    if (mean is None) != (std is None):
        raise EvalkitError("wrap() needs both mean and std, or neither")
    if mean is not None:
        mean, std = [float(v) for v in mean], [float(v) for v in std]  # type: ignore[union-attr]
        if len(mean) != len(std) or not mean:
            raise EvalkitError(f"normalization needs as many mean as std values ({mean} / {std})")
        if any(s <= 0 for s in std):
            raise EvalkitError(f"normalization std must be positive, got {std}")
    if mean is None and mode in ("auto", "logits"):
        return model
    return WrappedModel(model, mean=mean, std=std, output=output)


def looks_like_probabilities(out: torch.Tensor, atol: float = _PROB_ATOL) -> bool:
    """True when every row of ``out`` (N, K) is non-negative and sums to 1 (a softmax output)."""
    if out.ndim != 2 or out.shape[1] < 2 or out.shape[0] < 1:
        return False
    out = out.detach().double()
    return bool((out >= 0).all()) and bool(((out.sum(1) - 1).abs() <= atol).all())


def check_outputs(
    model: nn.Module,
    x_probe: torch.Tensor,
    *,
    output: str = "auto",
    num_classes: int | None = None,
) -> nn.Module:
    """Run ``model`` on ``x_probe`` (N, C, H, W) in eval mode and return a model evalkit can attack.

    With ``output`` other than ``auto`` the model is first wrapped to select the logits. Raises a
    one-line :class:`EvalkitError` when the (selected) output is not an ``(N, K >= 2)`` tensor,
    holds NaN/inf, looks like probabilities (rows >= 0 summing to 1), or has ``K != num_classes``.
    The model's train/eval mode is restored afterwards.
    """
    return probe_model(model, x_probe, output=output, num_classes=num_classes)[0]


def probe_model(
    model: nn.Module,
    x_probe: torch.Tensor,
    *,
    output: str = "auto",
    num_classes: int | None = None,
) -> tuple[nn.Module, int]:
    """:func:`check_outputs`, also returning the class count K seen on the probe."""
    mode, _ = parse_output(output)
    if mode not in ("auto", "logits"):
        model = wrap(model, output=output)
    try:
        with model_mode(model, False), torch.no_grad():
            raw = model(x_probe)
    except EvalkitError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of foreign code becomes one line
        msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise EvalkitError(
            f"the model fails on a probe batch of shape {tuple(x_probe.shape)}: {msg} "
            "(check the input shape / --dataset)"
        ) from None
    out = select_logits(raw, "auto")
    n = x_probe.shape[0]
    if out.ndim != 2 or out.shape[0] != n:
        raise EvalkitError(
            f"the model returns shape {tuple(out.shape)} for {n} images; evalkit needs "
            f"({n}, classes) logits"
        )
    if out.shape[1] < 2:
        raise EvalkitError(
            f"the model returns {out.shape[1]} output per image; evalkit needs logits for >= 2 "
            "classes (turn a single binary logit z into two, e.g. torch.cat([-z, z], 1) / 2)"
        )
    if not torch.isfinite(out).all():
        raise EvalkitError(
            "the model returns NaN/inf on a probe batch of random images (broken weights or "
            "numerics); fix the model before evaluating it"
        )
    if mode != "log" and looks_like_probabilities(out):
        raise EvalkitError(
            "the model returns probabilities (rows >= 0 summing to 1), but evalkit needs logits: "
            "remove the final softmax, or pass output='log' / --output log (may mask gradients)"
        )
    if mode == "log" and not looks_like_probabilities(out.exp()):
        raise EvalkitError(
            "output='log' expects probabilities, but the model's rows are not >= 0 summing to 1 "
            "(it already returns logits: drop output='log')"
        )
    if num_classes is not None and out.shape[1] != num_classes:
        raise EvalkitError(
            f"the model returns {out.shape[1]} logits per image but {num_classes} classes were "
            "expected (check --num-classes / --dataset)"
        )
    return model, int(out.shape[1])
