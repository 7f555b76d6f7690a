"""Shattered gradients diagnosed before any attack runs (Athalye, Carlini & Wagner, ICML 2018).

A gradient attack on a model whose input gradient is *missing* (a step in numpy or under
``no_grad``: autograd's "element 0 of tensors does not require grad"), exactly *zero* (rounding,
quantisation, JPEG's uint8 round trip) or *non-finite* (a numerically unstable step) is blind:
it crashes, or reports the clean accuracy as robustness. :func:`require_gradients` measures the
input gradient of the CW margin (which, unlike cross-entropy, does not saturate on confident
points) on a few clean points and, when it is missing for them or zero/non-finite for at least
:data:`SHATTERED_SHARE` of them, raises one :class:`~evalkit.errors.EvalkitError` line that
names the step when it can (:func:`locate_steps`) and the fix: declare the step's backward
approximation (BPDA: :func:`evalkit.bpda`, the ``bpda`` defense part or an input-transformation
part). A model that declared its steps is checked with the approximation on, so the attack goes
on with it. The per-run check of :func:`evalkit.evaluation.sanity.check_gradients` (CE-loss
gradients of the protocol's own loss, reported as flags) is the same measurement, made later on
more points with the protocol's loss.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from evalkit.attacks.losses import AttackLoss, make_loss
from evalkit.defenses.context import bpda_gradients
from evalkit.errors import EvalkitError
from evalkit.evaluation.sanity import gradient_counts, input_gradient

#: a zero or non-finite margin gradient on at least this share of probe points is a diagnosis
SHATTERED_SHARE = 0.25


def locate_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: AttackLoss) -> list[str]:
    """Submodules (deepest first found, in call order) where the gradient is lost: the output
    stops requiring a gradient although the input needed one (missing), or the output receives
    a non-zero gradient and passes none to its input (zero). ``name (Type)`` strings."""
    calls: list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]] = []

    def hook(name: str):
        def record(module: nn.Module, args: tuple, out: object) -> None:
            if args and torch.is_tensor(args[0]) and torch.is_tensor(out):
                calls.append((name, module, args[0], out))

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        with torch.enable_grad():
            xg = x.detach().clone().requires_grad_(True)
            value = loss(model, xg, y).sum()
            lost = [(n, m) for n, m, i, o in calls if i.requires_grad and not o.requires_grad]
            if not lost and value.requires_grad:
                tensors = [t for _, _, i, o in calls for t in (i, o)]
                usable = [t.requires_grad for t in tensors]
                wanted = [t for t, u in zip(tensors, usable) if u]
                grads = torch.autograd.grad(value, wanted, allow_unused=True) if wanted else ()
                it = iter(grads)
                full = [next(it) if u else None for u in usable]
                for k, (n, m, _, _) in enumerate(calls):
                    g_in, g_out = full[2 * k], full[2 * k + 1]
                    out_live = g_out is not None and bool((g_out != 0).any())
                    in_dead = g_in is None or not bool((g_in != 0).any())
                    if out_live and in_dead and usable[2 * k]:
                        lost.append((n, m))
    finally:
        for h in handles:
            h.remove()
    names = [n for n, _ in lost]
    deepest = [(n, m) for n, m in lost if not any(o.startswith(n + ".") for o in names)]
    seen: list[str] = []
    for n, m in deepest:
        text = f"{n} ({type(m).__name__})"
        if text not in seen:
            seen.append(text)
    return seen


def _what(missing: bool, nonfinite: int, zero: int, n: int) -> str:
    if missing:
        return (
            f"is missing for all {n} probe points (the output does not depend on the input "
            "through autograd: a step computed in numpy or under no_grad)"
        )
    if nonfinite >= zero:
        return f"is NaN/inf for {nonfinite}/{n} probe points (a numerically unstable step)"
    return (
        f"is exactly zero for {zero}/{n} probe points (a step with zero derivative: rounding, "
        "quantisation, JPEG, thresholding)"
    )


def require_gradients(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    declared: bool = False,
    missing_only: bool = False,
) -> None:
    """Raise a one-line :class:`EvalkitError` when the model's input gradient is shattered on
    the probe points ``x`` (N, C, H, W), ``y`` (N,) (see the module docstring); with
    ``declared`` (the model has BPDA steps) the check runs with their approximations on. With
    ``missing_only`` (``evaluate(shattered="run")``) zero or NaN gradients pass (the attacks run
    blind, the sanity checks flag them and the Square probe measures what they missed); a
    missing gradient never does, since no gradient attack can run."""
    if not len(x):
        return
    loss = make_loss("cw")
    with bpda_gradients(model, declared):
        grad = input_gradient(model, x, y, loss)
        nonfinite, zero = gradient_counts(grad) if grad is not None else (0, 0)
        n = len(x)
        if grad is not None and (missing_only or max(nonfinite, zero) < SHATTERED_SHARE * n):
            return
        steps = locate_steps(model, x, y, loss)
    where = (
        f"; it is lost in submodule {', '.join(steps)}"
        if steps
        else "; no submodule loses it, so the step is inside a forward() itself"
    )
    what = _what(grad is None, nonfinite, zero, n)
    if declared:
        raise EvalkitError(
            f"shattered gradients: even with the declared BPDA approximations the model's input "
            f"gradient {what}{where}: declare that step too (evalkit.bpda(step, "
            "backward='identity'), or defense='bpda' with params bpda_modules=NAME)"
        )
    first = steps[0].split(" ")[0] if steps else "NAME"
    raise EvalkitError(
        f"shattered gradients: the model's input gradient {what}{where}, so gradient attacks "
        "would be blind; declare how to approximate the step backward (BPDA, Athalye et al. "
        "2018): wrap it as evalkit.bpda(step, backward='identity'), or pass defense='bpda' with "
        f"params bpda_modules={first} (CLI: --defense bpda --param bpda_modules={first}); input "
        "transformations have their own parts (defense='bitdepth', 'jpeg' or 'median')"
        + ("" if grad is None else "; shattered='run' runs the blind attacks anyway")
    )
