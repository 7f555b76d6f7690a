"""BPDA: a non-differentiable step run forward, a differentiable approximation used backward.

Athalye, Carlini & Wagner (ICML 2018, "Obfuscated Gradients Give a False Sense of Security")
name three ways a defense hides its gradient. *Shattered* gradients come from a step that is
not differentiable (rounding, JPEG, a step computed in numpy) or numerically unstable; their
answer, Backward Pass Differentiable Approximation (BPDA), runs the step ``f`` as it is in the
forward pass and differentiates an approximation ``g(x) ≈ f(x)`` in the backward pass: ``g(x) = x``
("identity", the usual choice for input transformations such as bit-depth reduction and JPEG)
or any differentiable callable. *Vanishing/exploding* gradients from a deep iterative but
differentiable preprocessing are answered by reparameterisation (Athalye et al. §4.3): here,
:func:`reparameterize` differentiates a map ``h`` whose outputs the preprocessing leaves as they
are (``f(h(x)) ≈ h(x)``) instead of the unrolled iterations. *Stochastic* gradients are EOT's
(:mod:`evalkit.attacks.eot`); a random step wrapped here gets both.

A wrapped step is a module flagged ``non_differentiable`` (:mod:`evalkit.defenses.context`):

* inside :func:`~evalkit.defenses.context.bpda_gradients` (what the harness's ``*-bpda`` attacks
  run in), its backward is the approximation's;
* outside it, a gradient sees the step as it is: its own autograd gradient where it has one
  (``torch.round``: zero; a median: sparse), else zero (a numpy step). That is the obfuscated
  gradient a plain attack meets, which the harness also runs, so the report shows both.

Forward values never depend on the mode. The step runs without autograd in BPDA mode, so numpy
or other non-torch code is fine; its output must be a tensor or array of floats.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from evalkit.defenses.registry import Plugin, register
from evalkit.errors import EvalkitError

Backward = str | Callable[[torch.Tensor], torch.Tensor]
KINDS = ("bpda", "reparameterisation")


def _as_tensor(out: Any, like: torch.Tensor) -> torch.Tensor:
    """The step's output as a float tensor on ``like``'s device (numpy arrays accepted)."""
    if isinstance(out, np.ndarray):
        out = torch.from_numpy(np.ascontiguousarray(out))
    if not torch.is_tensor(out):
        raise EvalkitError(
            f"a non-differentiable step must return a tensor or numpy array, not "
            f"{type(out).__name__}"
        )
    dtype = like.dtype if not out.dtype.is_floating_point else out.dtype
    return out.to(like.device, dtype)


class _Approximated(torch.autograd.Function):
    """Forward: ``module.run_step(x)`` without autograd. Backward: the approximation's VJP."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, module: BPDA) -> torch.Tensor:  # type: ignore[override]
        out = _as_tensor(module.run_step(x), x)
        if module.backward_fn is None and out.shape != x.shape:
            raise EvalkitError(
                f"BPDA with backward='identity' needs a step that keeps the input's shape "
                f"({tuple(x.shape)} -> {tuple(out.shape)}); give backward= a differentiable "
                "approximation with the step's output shape"
            )
        ctx.module = module
        ctx.save_for_backward(x)
        return out.clone() if out is x else out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        approx = ctx.module.backward_fn
        if approx is None:
            return grad, None
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            yg = approx(xg)
            if yg.shape != grad.shape:
                raise EvalkitError(
                    f"the BPDA approximation returns shape {tuple(yg.shape)} but the step "
                    f"returns {tuple(grad.shape)}: they must agree"
                )
            (gx,) = torch.autograd.grad(yg, xg, grad, allow_unused=True)
        return (torch.zeros_like(x) if gx is None else gx), None


class _ZeroGradient(torch.autograd.Function):
    """Gives a step computed outside autograd (numpy) the gradient it really has for a gradient
    attack: zero (the obfuscated gradient), instead of a missing one that would crash it."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.shape, ctx.dtype = x.shape, x.dtype
        return out.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return torch.zeros(ctx.shape, dtype=ctx.dtype, device=grad.device), None


class BPDA(nn.Module):
    """A non-differentiable ``step`` with its backward approximation (see the module docstring).

    ``step``: an ``nn.Module`` (kept as a child, so its flags, e.g. ``stochastic``, are seen)
    or any callable ``(N, ...) tensor -> tensor/array``. ``backward``: ``"identity"`` (the
    gradient passes through unchanged; the step must keep the shape) or a differentiable
    callable ``g`` with ``g(x) ≈ step(x)``. ``kind``: ``bpda`` or ``reparameterisation``
    (recorded in the summary's ``adaptive`` block).
    """

    non_differentiable = True

    def __init__(
        self,
        step: nn.Module | Callable[..., Any],
        backward: Backward = "identity",
        kind: str = "bpda",
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise EvalkitError(f"BPDA kind must be one of {', '.join(KINDS)}, not {kind!r}")
        if isinstance(backward, str):
            if backward.strip().lower() != "identity":
                raise EvalkitError(
                    f"BPDA backward must be 'identity' or a differentiable callable, not "
                    f"{backward!r}"
                )
            backward_fn = None
        elif callable(backward):
            backward_fn = backward
        else:
            raise EvalkitError(
                f"BPDA backward must be 'identity' or a callable, not {type(backward).__name__}"
            )
        if not callable(step):
            raise EvalkitError(f"BPDA needs a callable step, not {type(step).__name__}")
        if isinstance(step, nn.Module):
            self.step = step
            self._fn: Callable[..., Any] | None = None
        else:
            self.step = None
            self._fn = step
        self.backward_fn = backward_fn
        if isinstance(backward_fn, nn.Module):
            self.approximation = backward_fn  # a child: moved with .to(), its flags seen
        self.kind = kind
        self.bpda_active = False

    def run_step(self, x: torch.Tensor) -> Any:
        return self.step(x) if self.step is not None else self._fn(x)  # type: ignore[misc]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bpda_active and torch.is_grad_enabled() and x.requires_grad:
            return _Approximated.apply(x, self)
        out = _as_tensor(self.run_step(x), x)
        if torch.is_grad_enabled() and x.requires_grad and not out.requires_grad:
            out = _ZeroGradient.apply(x, out)
        return out

    def describe(self) -> str:
        """One line for the protocol printout and the summary's ``adaptive`` record."""
        step = self.step if self.step is not None else self._fn
        name = (
            type(step).__name__
            if isinstance(step, nn.Module)
            else getattr(step, "__name__", "step")
        )
        inner = step.extra_repr() if isinstance(step, nn.Module) else ""
        back = (
            "identity"
            if self.backward_fn is None
            else getattr(self.backward_fn, "__name__", type(self.backward_fn).__name__)
        )
        return f"{name}({inner}) backward {back}"

    def extra_repr(self) -> str:
        return f"kind={self.kind}, {self.describe()}"


def bpda(module: nn.Module | Callable[..., Any], backward: Backward = "identity") -> BPDA:
    """Declare ``module`` a non-differentiable step: forward runs it, backward differentiates
    ``backward`` (``"identity"`` or a differentiable callable ``g(x) ≈ module(x)``).

    Put the result where the step sits in your model, e.g.
    ``nn.Sequential(evalkit.bpda(NumpyRound()), net)``; :func:`evalkit.evaluate` then adds a
    BPDA version of every gradient attack (``pgd-20-bpda``, ...) beside the plain one and
    records it under ``adaptive``. Follows Athalye, Carlini & Wagner (ICML 2018), §4.1.
    Raises :class:`EvalkitError` for a ``backward`` that is neither.
    """
    return BPDA(module, backward, kind="bpda")


def reparameterize(
    module: nn.Module | Callable[..., Any], surrogate: Callable[[torch.Tensor], torch.Tensor]
) -> BPDA:
    """Declare a differentiable but deep/iterative preprocessing ``module`` (vanishing or
    exploding gradients, Athalye et al.'s third kind): forward runs it; attacks differentiate
    ``surrogate`` instead, a differentiable map whose outputs the preprocessing leaves as they
    are (``module(surrogate(x)) ≈ surrogate(x)``, e.g. the iteration's fixed point in closed
    form), which is Athalye et al.'s reparameterisation x = h(z) (§4.3) taken at z = x.
    docs/defenses.md has a worked example."""
    if isinstance(surrogate, str) or not callable(surrogate):
        raise EvalkitError("reparameterize needs a differentiable callable surrogate h(x)")
    return BPDA(module, surrogate, kind="reparameterisation")


# ------------------------------------------------------------------ the ``bpda`` SPEC part


def _split_names(raw: Any) -> list[str]:
    return [t.strip() for t in str(raw or "").replace(";", ",").split(",") if t.strip()]


def leaf_names(model: nn.Module, limit: int = 12) -> str:
    """Some submodule names of ``model`` (for error messages)."""
    names = [n for n, m in model.named_modules() if n and not list(m.children())]
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "") or "none"


def apply_bpda(model: nn.Module, params: dict[str, Any]) -> nn.Module:
    """Wrap the submodules named by ``bpda_modules`` (dotted names, comma separated) in
    :class:`BPDA` with the ``bpda_backward`` approximation (``identity``), in place."""
    names = _split_names(params.get("bpda_modules"))
    if not names:
        raise EvalkitError(
            "defense part bpda needs the submodules holding the non-differentiable steps: "
            f"params bpda_modules=NAME[,NAME] (this model's submodules: {leaf_names(model)})"
        )
    backward = str(params.get("bpda_backward", "identity"))
    modules = dict(model.named_modules())
    for name in names:
        if name not in modules or not name:
            raise EvalkitError(
                f"bpda_modules names {name!r}, which is not a submodule of the model "
                f"(submodules: {leaf_names(model)})"
            )
        child = modules[name]
        if isinstance(child, BPDA):
            continue
        parent_name, _, attr = name.rpartition(".")
        setattr(modules[parent_name] if parent_name else model, attr, BPDA(child, backward))
    return model


PLUGIN = register(
    Plugin(
        name="bpda",
        apply=apply_bpda,
        test_time_only=True,
        any_model=True,
        defaults={"bpda_modules": "", "bpda_backward": "identity"},
        summary="declare submodules (bpda_modules=NAME,...) non-differentiable steps: attacks "
        "also run with their identity backward (BPDA, Athalye et al. 2018)",
    )
)
