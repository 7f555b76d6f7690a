"""Projected gradient descent in pixel space (Linf and L2), the workhorse of training and
evaluation (Madry et al. 2018). Random starts draw from an explicit generator so runs are
reproducible per batch.

Defaults: 10 steps, Linf step ``eps/4``, L2 step ``2.5 * eps / steps`` (Madry et al.'s rule:
enough to cross the ball 2.5 times), uniform random start, one restart; evaluation presets state
their step count explicitly. ``pgd`` never changes the model's train/eval mode or its
parameters' ``requires_grad``; wrap the call in :func:`evalkit.attacks.mode.attack_mode` to
attack the honest eval-mode model.

Plain PGD returns the *last* iterate, as reference implementations (torchattacks, Foolbox) do
and as adversarial training wants. For evaluation, ``keep_best=True`` returns per point an
iterate that is misclassified whenever any iterate was ("every break counts"), and
``early_stop=True`` also drops broken points from the batch as soon as they break (see
:func:`pgd`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from evalkit.attacks.losses import AttackLoss, make_loss
from evalkit.attacks.registry import register_attack
from evalkit.attacks.tracking import (
    LogitTap,
    note_cycle_savings,
    score_dtype,
    success_and_margin,
)
from evalkit.defenses.context import is_stochastic
from evalkit.errors import EvalkitError

NORMS = ("linf", "l2")
# iterates compared per point for cycle detection (``pgd(cycles=...)``), i.e. the longest cycle
# found; the memory paid is this many copies of the active batch. Measured (PGD-100, eps 0.1,
# 3-epoch PGD-AT smallcnn, 250 test images, 149 never broken): depth 2 finds a cycle for 82 of
# them, 4 for 129, 8 for 141, 16 and 32 for 148
CYCLE_DEPTH = 8
# on by default only for Linf runs this long: cycles form once iterates sit on the ball's faces,
# so PGD-20 saved 0.1% of its propagations (bench/pgd_cycles.py) for the time of the
# comparisons, and L2 steps (no sign) practically never repeat a state
CYCLE_MIN_STEPS = 40


def _l2_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.ndim - 1)))


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Project a perturbation onto the eps ball of ``norm``."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    return delta * (eps / _l2_norm(delta)).clamp(max=1.0)


def random_init(
    x: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None
) -> torch.Tensor:
    """A uniform start in the Linf ball, or a uniform-in-ball start for L2.

    Drawn on the CPU from ``generator`` and moved, so a batch gets the same start on any device.
    """
    if norm == "linf":
        u = torch.rand(x.shape, generator=generator, device="cpu").to(x.device, x.dtype)
        return (2 * u - 1) * eps
    g = torch.randn(x.shape, generator=generator, device="cpu").to(x.device, x.dtype)
    r = torch.rand(x.shape[0], generator=generator, device="cpu").to(x.device, x.dtype)
    r = r ** (1.0 / x[0].numel())
    return g / _l2_norm(g) * eps * r.view(-1, *([1] * (x.ndim - 1)))


def default_step_size(eps: float, norm: str, steps: int) -> float:
    """``eps/4`` for Linf; ``2.5 * eps / steps`` for L2 (documented defaults, see module doc)."""
    if norm == "linf":
        return eps / 4
    return 2.5 * eps / max(int(steps), 1)


def _check(norm: str, steps: int, restarts: int) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm must be linf or l2, not {norm!r}")
    if int(steps) < 0 or int(restarts) < 1:
        raise ValueError(f"need steps >= 0 and restarts >= 1 (got {steps}, {restarts})")


@dataclass
class _Step:
    """One PGD trajectory's fixed parts: ball, step, loss direction."""

    eps: float
    steps: int
    step: float
    norm: str
    ascend: float

    def update(
        self,
        x_adv: torch.Tensor,
        grad: torch.Tensor,
        x: torch.Tensor,
        lo: torch.Tensor | None,
        hi: torch.Tensor | None,
    ) -> torch.Tensor:
        """One ascent step from ``x_adv`` (detached, updated in place) and projection."""
        with torch.no_grad():
            if self.norm == "linf":
                x_adv.add_(grad.sign(), alpha=self.ascend * self.step)
                return torch.minimum(torch.maximum(x_adv, lo, out=x_adv), hi, out=x_adv)
            x_adv.add_(grad / _l2_norm(grad), alpha=self.ascend * self.step)
            return (x + project(x_adv.sub_(x), self.eps, self.norm)).clamp_(0, 1)

    def bounds(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if self.norm != "linf":
            return None, None
        return (x - self.eps).clamp_(min=0), (x + self.eps).clamp_(max=1)


def _pgd_run(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    run: _Step,
    loss_fn: AttackLoss,
    delta: torch.Tensor,
) -> torch.Tensor:
    """One PGD run from ``x + delta``; returns the last iterate (as reference implementations do).

    The update works in place on detached tensors and differentiates w.r.t. the input only, so a
    step costs one forward and one input backward and nothing else.
    """
    x_adv = (x + project(delta, run.eps, run.norm)).clamp_(0, 1)
    lo, hi = run.bounds(x)
    for _ in range(run.steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(model, x_adv, y).sum(), x_adv)
        x_adv = run.update(x_adv.detach(), grad, x, lo, hi)
    return x_adv.detach()


@dataclass
class _Tracked:
    """Result of a tracked run, per point of its batch."""

    x_adv: torch.Tensor  # the kept iterate (broken points) or the last one
    broken: torch.Tensor  # bool: some iterate was misclassified (untargeted) / hit the target
    value: torch.Tensor  # ascend * loss at the last iterate (-inf where the point broke early)


def _pgd_run_tracked(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    run: _Step,
    loss_fn: AttackLoss,
    delta: torch.Tensor,
    tap: LogitTap,
    *,
    targeted: bool,
    early_stop: bool,
    cycles: int = 0,
) -> _Tracked:
    """A PGD run that also scores every iterate from the logits of the forward that computes
    its gradient (read by ``tap``), plus one forward on the last iterate.

    With ``cycles > 0`` an unbroken point whose new iterate equals one of its last ``cycles``
    iterates leaves the batch too (:class:`_CycleWatch`): the update is a function of the
    iterate alone, so from there on the run repeats states already scored, and its last
    iterate is known without computing it.

    Among misclassified iterates the one with the lowest margin is kept; with ``early_stop`` a
    point leaves the active batch at its first misclassified iterate (kept), so later steps cost
    only the points still unbroken. Unbroken points follow exactly the same arithmetic as in
    :func:`_pgd_run` (the per-point computations do not depend on the batch around them).
    """
    n = x.shape[0]
    x_adv = (x + project(delta, run.eps, run.norm)).clamp_(0, 1)
    lo, hi = run.bounds(x)
    kept = x_adv.clone()
    kept_margin = torch.full((n,), float("inf"), device=x.device, dtype=score_dtype(x.device))
    broken = torch.zeros(n, dtype=torch.bool, device=x.device)
    value = torch.full((n,), float("-inf"), device=x.device, dtype=score_dtype(x.device))
    act = torch.arange(n, device=x.device)
    xa, ya, xo = x_adv, y, x

    def record(points: torch.Tensor, iterate: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        ok, margin = success_and_margin(logits, y[points], targeted)
        better = ok & (margin < kept_margin[points])
        kept[points[better]] = iterate[better]
        kept_margin[points[better]] = margin[better]
        broken[points[ok]] = True
        return ok

    watch = _CycleWatch(cycles, run.steps)
    for step in range(run.steps):
        xa.requires_grad_(True)
        with tap.watching(xa):
            loss_value = loss_fn(model, xa, ya)
        (grad,) = torch.autograd.grad(loss_value.sum(), xa)
        xa = xa.detach()
        ok = record(act, xa, tap.logits(model, xa))
        if early_stop and bool(ok.any()):
            keep = ~ok
            act, xa, ya, xo, grad = act[keep], xa[keep], ya[keep], xo[keep], grad[keep]
            if lo is not None:
                lo, hi = lo[keep], hi[keep]
            watch.keep(keep)
            if act.numel() == 0:
                break
        watch.push(xa)
        xa = run.update(xa, grad, xo, lo, hi)
        keep = watch.close(act, xa, step + 1)
        if keep is not None:
            act, xa, ya, xo = act[keep], xa[keep], ya[keep], xo[keep]
            if lo is not None:
                lo, hi = lo[keep], hi[keep]
            if act.numel() == 0:
                break
    # points that left on a cycle take the last forward with the rest, at their known last
    # iterate: the same computation a full run does on them
    act, xa, ya = watch.rejoin(act, xa, ya, y)
    if act.numel():
        with torch.no_grad(), tap.watching(xa):
            last_value = loss_fn(model, xa, ya)
        record(act, xa, tap.logits(model, xa))
        value[act] = run.ascend * last_value.detach().to(score_dtype(x.device))
        out = kept.clone()
        last = ~broken[act]
        out[act[last]] = xa[last]
    else:
        out = kept
    return _Tracked(out, broken, value)


def _bits(t: torch.Tensor) -> torch.Tensor:
    """``t``'s bit patterns (equal exactly when bit for bit equal: -0.0 is not 0.0)."""
    kind = {8: torch.int64, 4: torch.int32, 2: torch.int16}[t.element_size()]
    return t.contiguous().view(kind)


class _CycleWatch:
    """Exact cycle detection for fixed-step PGD (the idea of PGD with cycle detection,
    arXiv 2503.19347; written here from the update rule, not from its code).

    A step maps iterate ``x_t`` to ``x_{t+1}`` through the gradient at ``x_t`` alone (fixed
    step size, no momentum, deterministic model), so if ``x_{t+1}`` equals an earlier
    ``x_s`` (every element, bit for bit) the run repeats ``x_s .. x_t`` from then on with period
    ``p = t + 1 - s``: every later iterate was already scored, and the iterate after the last
    step is ``x_{s + (T - s) mod p}``. Only the last ``depth`` iterates are compared, so memory
    is ``depth`` copies of the active batch; a longer cycle is simply not detected (the run
    then goes on as without the watch, never differently).
    """

    def __init__(self, depth: int, steps: int) -> None:
        self.depth = max(int(depth), 0)
        self.steps = steps
        self.history: list[torch.Tensor] = []  # oldest first, rows = active points
        self.left: list[tuple[torch.Tensor, torch.Tensor]] = []  # (points, last iterates)
        self.saved_steps = 0

    def keep(self, rows: torch.Tensor) -> None:
        """The active batch lost the rows not in ``rows`` (early exit)."""
        self.history = [h[rows] for h in self.history]

    def push(self, xa: torch.Tensor) -> None:
        """Remember the iterate about to be stepped from."""
        if self.depth:
            self.history.append(xa.clone())
            del self.history[: -self.depth]

    def close(self, act: torch.Tensor, xa: torch.Tensor, t: int) -> torch.Tensor | None:
        """After step ``t`` (``xa`` is ``x_t``): the rows to keep running, or None when no
        point closed a cycle (nothing to do)."""
        if not self.history or t >= self.steps:
            return None
        n = xa.shape[0]
        period = torch.zeros(n, dtype=torch.long, device=xa.device)
        now = _bits(xa)
        for back, past in enumerate(reversed(self.history), start=1):
            same = (_bits(past) == now).flatten(1).all(1) & (period == 0)
            period[same] = back
        closed = period > 0
        if not bool(closed.any()):
            return None
        rows = closed.nonzero().squeeze(1)
        last = torch.empty_like(xa[rows])
        for j, (row, p) in enumerate(zip(rows.tolist(), period[rows].tolist())):
            start = t - p  # x_start == x_t
            index = start + (self.steps - start) % p  # the iterate after the last step
            last[j] = self.history[len(self.history) - (t - index)][row]
        self.left.append((act[rows], last))
        self.saved_steps += int((self.steps - t) * rows.numel())
        note_cycle_savings(2 * int((self.steps - t) * rows.numel()))
        keep = ~closed
        self.keep(keep)
        return keep

    def rejoin(
        self, act: torch.Tensor, xa: torch.Tensor, ya: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The active points plus those that left on a cycle, each at its last iterate."""
        if not self.left:
            return act, xa, ya
        points = torch.cat([act, *(p for p, _ in self.left)])
        iterates = torch.cat([xa, *(it for _, it in self.left)])
        return points, iterates, y[points]


def _success(
    model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, targeted: bool
) -> torch.Tensor:
    with torch.no_grad():
        pred = model(x_adv).argmax(1)
    return pred == y if targeted else pred != y


@register_attack(
    "pgd",
    norms=NORMS,
    white_box=True,
    base_loss="ce",
    description="PGD, step eps/4 (L2: 2.5*eps/steps), uniform random start, 1 restart",
    iterative=True,
)
def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 10,
    step_size: float | None = None,
    norm: str = "linf",
    loss: AttackLoss | str = "ce",
    random_start: bool = True,
    targeted: bool = False,
    restarts: int = 1,
    generator: torch.Generator | None = None,
    init: torch.Tensor | None = None,
    keep_best: bool = False,
    early_stop: bool = False,
    cycles: int | None = None,
) -> torch.Tensor:
    """Return ``x_adv`` (``x``'s shape (N, ...) and dtype) within the ``norm`` ball of radius
    ``eps`` around ``x`` and in [0, 1].

    Defaults: ``steps=10``, step from :func:`default_step_size`, uniform random start,
    ``restarts=1``, CE loss; the registry's ``pgd`` entry uses the same defaults.

    * ``y`` is the true label (untargeted: the loss ascends) or the target (``targeted``: the
      loss descends, success means predicting ``y``).
    * ``restarts > 1`` runs again from fresh random starts on the examples not yet broken and
      keeps, per example, the first restart that succeeds, else the one with the highest loss
      (lowest for targeted). Each restart draws a start for the whole batch and uses the rows of
      the points still running, so a point's start does not depend on which others broke.
    * ``keep_best``: a point is *broken* when some iterate (the start included) is
      misclassified (untargeted: ``argmax != y``, or non-finite logits; targeted:
      ``argmax == y``); a broken point gets the misclassified iterate with the lowest margin
      (``z_y - max_{j != y} z_j``; targeted: the negative), an unbroken point the last iterate.
      Iterates are scored from the logits of the forward that computes the gradient (averaged
      over the samples of an EOT loss), so tracking costs one extra forward (on the last
      iterate) per run, not one per step. If the loss does not call ``model`` on the iterate
      itself, each iterate costs one more forward.
    * ``early_stop`` (implies ``keep_best``; evaluation of deterministic models only): a point
      leaves the batch at its first misclassified iterate, which it keeps; later steps cost only
      the unbroken points, whose result is bit-identical to a run without ``early_stop`` when the
      model computes each point independently of the batch size (BLAS matrix products may round
      the last bit differently for another batch size; Linf's sign step nearly always hides
      that, L2 steps carry it as ~1e-16 differences). On a
      randomized model one draw's mistake is not a break, so ``early_stop`` on a model flagged
      ``stochastic`` is an :class:`EvalkitError` (undeclared randomness is the caller's to
      detect, e.g. with :func:`~evalkit.attacks.eot.is_model_random`).
    * ``cycles`` (implies ``keep_best``; deterministic models only, as ``early_stop``): an
      unbroken point whose iterate equals, bit for bit, one of its last ``cycles`` iterates
      leaves the batch, since a fixed-step run from a repeated state repeats states already
      scored; its last iterate is read off the cycle, so the result is the full run's (the same
      batch-size caveat as ``early_stop``). Default: :data:`CYCLE_DEPTH` with ``early_stop`` on
      Linf runs of at least :data:`CYCLE_MIN_STEPS` steps, else 0 (off). Linf sign steps revisit states often once clipped at the ball's faces; L2
      steps almost never do.
    * ``init`` (a perturbation) replaces the first random start; used to cross-check against
      reference implementations from the same starting point.
    * The model's train/eval mode is left as the caller set it (the harness and trainer choose).
    """
    _check(norm, steps, restarts)
    loss_fn = make_loss(loss) if isinstance(loss, str) else loss
    step = step_size if step_size is not None else default_step_size(eps, norm, steps)
    run = _Step(float(eps), int(steps), float(step), norm, -1.0 if targeted else 1.0)
    x = x.detach()
    default = CYCLE_DEPTH if early_stop and norm == "linf" and steps >= CYCLE_MIN_STEPS else 0
    depth = default if cycles is None else int(cycles)
    if depth < 0:
        raise ValueError(f"cycles must be >= 0 (got {cycles})")
    if early_stop or depth:
        keep_best = True
        if is_stochastic(model):
            raise EvalkitError(
                "PGD early_stop and cycle detection need a deterministic model (this one "
                "declares itself stochastic); use keep_best=True without early_stop"
            )

    def start(first: bool) -> torch.Tensor:
        if first and init is not None:
            return init.detach().to(x.device, x.dtype).clone()
        if random_start:
            return random_init(x, eps, norm, generator)
        return torch.zeros_like(x)

    if keep_best:
        return _pgd_keep_best(
            model, x, y, run, loss_fn, restarts, start, targeted, early_stop, depth
        )
    if restarts == 1:
        return _pgd_run(model, x, y, run, loss_fn, start(True))

    best = x.clone()
    best_loss = torch.full(
        (x.shape[0],), float("-inf"), device=x.device, dtype=score_dtype(x.device)
    )
    done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for r in range(restarts):
        idx = (~done).nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        xs, ys = x[idx], y[idx]
        adv = _pgd_run(model, xs, ys, run, loss_fn, start(r == 0)[idx])
        with torch.no_grad():
            value = run.ascend * loss_fn(model, adv, ys).detach().to(score_dtype(x.device))
        fooled = _success(model, adv, ys, targeted)
        better = fooled | (value > best_loss[idx])
        best[idx[better]] = adv[better]
        best_loss[idx[better]] = value[better]
        done[idx[fooled]] = True
    return best


def _pgd_keep_best(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    run: _Step,
    loss_fn: AttackLoss,
    restarts: int,
    start: Callable[[bool], torch.Tensor],
    targeted: bool,
    early_stop: bool,
    cycles: int = 0,
) -> torch.Tensor:
    """Restarts of tracked runs, each on the points no earlier restart broke."""
    best = x.clone()
    best_value = torch.full(
        (x.shape[0],), float("-inf"), device=x.device, dtype=score_dtype(x.device)
    )
    broken = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    with LogitTap(model) as tap:
        for r in range(restarts):
            idx = (~broken).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            delta = start(r == 0)
            res = _pgd_run_tracked(
                model,
                x[idx],
                y[idx],
                run,
                loss_fn,
                delta[idx],
                tap,
                targeted=targeted,
                early_stop=early_stop,
                cycles=cycles,
            )
            better = res.broken | (res.value > best_value[idx])
            best[idx[better]] = res.x_adv[better]
            best_value[idx[better]] = res.value[better]
            broken[idx[res.broken]] = True
    return best
