"""APGD-CE / APGD-DLR and APGD-T (targeted DLR), evalkit's own implementation of Algorithm 1 of
Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks" (ICML), written from the paper.

The algorithm (per point, Linf or L2 ball S around ``x`` intersected with [0, 1]):

* step size ``eta = 2 * eps``; ``x1 = P_S(x0 + eta * dir(grad f(x0)))`` (``dir`` = sign for
  Linf, unit L2 direction for L2), then with momentum ``alpha = 0.75``
  ``z = P_S(xk + eta * dir(grad f(xk)))``, ``x(k+1) = P_S(xk + alpha (z - xk) + (1 - alpha)
  (xk - x(k-1)))``;
* checkpoints ``w_j = ceil(p_j * n_iter)`` with ``p_0 = 0``, ``p_1 = 0.22``,
  ``p_(j+1) = p_j + max(p_j - p_(j-1) - 0.03, 0.06)``; at checkpoint ``w_j`` the step size is
  halved and the iterate restarted from the best point so far when (condition 1) the loss went
  up in fewer than ``rho * (w_j - w_(j-1))`` of the steps since ``w_(j-1)``, ``rho = 0.75``, or
  (condition 2) the step size was not halved at ``w_(j-1)`` and the best loss has not improved
  since then;
* losses: CE, DLR ``-(z_y - max_(i != y) z_i) / (z_pi1 - z_pi3)`` and, for APGD-T, targeted DLR
  ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` (``pi`` sorts the logits in decreasing
  order); APGD-T attacks the ``n_target_classes`` classes with the highest clean logits other
  than ``y``, one after the other.

What evalkit adds (the paper's algorithm is unchanged per point):

* **Per-point state with per-iteration compaction** (``early_stop=True``, for deterministic
  models): a point leaves the active batch at the first iterate the model misclassifies, and
  that iterate is its result, so later iterations only pay for the points still robust. Every
  piece of state (iterate, previous iterate, gradient, step size, best point, checkpoint
  counters) is per point, so a point's trajectory does not depend on which others are still
  in the batch.
* **Best-iterate tracking**: a misclassifying iterate always wins; otherwise the iterate with
  the highest loss is returned (never the clean input, unless the clean input is already
  misclassified). Restarts and targets only attack the points still robust.
* **One forward+backward per iteration and nothing else**: the logits of the forward used for
  the gradient also decide success; the final iterate costs one forward. A call costs one
  clean forward, then per run (restart or target) ``n_iter`` forward+backward passes and one
  forward for each point still active (times ``eot_iter``).
* ``early_stop=False`` runs every point for all iterations of a run (randomised models: one
  lucky misclassification is weak evidence); a point then returns its highest-loss
  misclassifying iterate. Points broken in a run are still not attacked in later runs.
* ``eot_iter > 1`` averages loss, gradient and logits over that many forward passes (EOT).
* Random starts are drawn on the CPU from ``generator`` for the whole batch at every run (and
  moved), so a point gets the same start whatever the other points do and on any device.
* ``keep_best`` is accepted for the registry's convention of iterative attacks and changes
  nothing: Algorithm 1 returns its best iterate by construction.

Stopping rules for points with nothing left to gain (evalkit's, optional, off by default so the
plain algorithm stays available; measured in ``bench/autoattack_cost.py``, and ``stop_far`` in
``bench/apgd_stop_far.py``). All three only stop
attacking a point, so they can lose breaks but never invent one, and never change how another
point is attacked. They use the untargeted DLR ``-(z_y - max_(i != y) z_i) / (z_pi1 - z_pi3)``
of every iterate's logits (no extra propagation) as a scale-free distance to the decision
boundary: in [-1, 0] for a correctly classified point, 0 on the boundary, -1 when the
runner-up is no closer than the third class. Its maximum over a point's iterates is the point's
*closest approach*. Needs K >= 3 classes; with 2 classes ``stop_plateau`` and ``stop_far``
change nothing.

* ``stop_plateau`` (every function): a point stops its run at checkpoint ``w_j`` when (1)
  APGD's own progress test halved its step size at both ``w_(j-1)`` and ``w_j``, (2) its best
  loss gained at most ``PLATEAU_TOL`` (3%) of the run's total gain over those two windows,
  ``f_max(w_j) - f_max(w_(j-2)) <= 0.03 (f_max(w_j) - f(x_start))``, and (3) its closest
  approach in the run is below ``-PLATEAU_GUARD`` (-0.2): near the boundary, a tiny loss gain
  can still decide a break (``tests/test_apgd.py`` builds such a case: without (3) the rule
  loses all 7 breaks). The point keeps ``x_max``, as at the end of the run. With 100
  iterations the earliest stop is after iteration 42; most plateaued points stop after 58.
* ``stop_far`` (every function): at the run's first checkpoint ``w_1`` (iteration 22 of
  100), a point whose closest approach in this run is below ``-STOP_FAR_DLR`` (-0.6) stops the
  run and keeps ``x_max``. On PGD-AT models most of APGD-CE + APGD-T's propagations go to the
  points that stay robust, each of its ten runs to the end; but almost every break comes early
  in its run, and a run still far from the boundary at ``w_1`` rarely gets close later.
* ``skip_far_targets`` (:func:`apgd_ce_t` only): after APGD-CE and the first target, a point
  still robust skips the remaining targets when its closest approach over every iterate of
  those runs is below ``-FAR_DLR`` (-0.7). Targets come in decreasing clean logit, so the
  remaining ones start further away; the signal needs the untargeted APGD-CE run (the closest
  approach of target runs alone did not separate the points later targets break).

Calibration (PGD-AT smallcnn width 8, fashion-mnist-mini, eps 0.1, first 500 test points; every
run replayed on every clean-robust point, seeds 0-3): points that only a target after the first
broke had a closest approach of -0.46 at most (width 16: -0.56, seeds 0-1), while a third of
the points that stay robust are below -0.7; without (3), a 3% tolerance lost one break in 3
seeds, with it none. Both rules on, seeds 0-2 of both widths: no break lost (also with
``FAR_DLR`` 0.6, which skips more); seed 0: 0.46x (width 8) and 0.58x (width 16) the
propagations of the plain chain. On a PGD-AT ResNet-18 (width 16, ``bench/aa_fast_models.py``)
``skip_far_targets`` lost one break of 300 (training and attack seed 0; the plain chain and ``stop_plateau``
alone found it; ``bench/results/aa_fast_models_skip_far_with_standard.json``): the
calibration does not carry over to that architecture, so ``skip_far_targets`` stays an opt-in
(the ``aa-fast`` preset uses ``stop_plateau`` and ``stop_far``).

Calibration of ``stop_far`` (``bench/apgd_stop_far.py``, ``bench/results/apgd_stop_far.json``:
the plain chain traced on every iterate of every run, its step-size logic replayed under each
threshold, the replay checked equal to the real attack): PGD-AT smallcnn and ResNet-18 (width
16, eps 0.1), training seeds 0 and 1, test points 0-299 (attack seed 0) and 300-599 (seed 1),
six configurations, 1,370 clean-correct points, 13,700 runs. Every point the plain chain breaks
is broken by some run by iteration 23; 20 of 1,197 breaking runs break only later, with a
closest approach at ``w_1`` of -0.62 at the lowest (two of them, on one configuration, at or
below -0.6: their points were broken by other runs). No break lost at any threshold from 0.3 to 0.7;
with 0.6 (``stop_plateau`` on too) the chain costs 0.38-0.50x the plain chain's propagations
(``stop_plateau`` alone 0.63-0.69x). Held out from this calibration (training seed 2, test
points 600-899, attack seed 2; ``bench/results/aa_fast_models_heldout.json``): the ``aa-fast``
preset costs 0.42x (smallcnn) and 0.36x (ResNet-18) pyautoattack custom, 0 disagreeing points.
Outside the calibration: ``w_1`` scales with ``n_iter`` (iteration 5 of 20), which was only
calibrated at 100 iterations; with ``eot_iter > 1`` or a randomized model the rule reads the
EOT-averaged logits, which were never calibrated. The rule can lose a break where the only run that finds
it starts far from the boundary and gets there after ``w_1``: the ``aa-fast`` preset uses it;
the presets that run pyautoattack and these functions' defaults do not.

Success always means misclassification (``argmax != y``), also for APGD-T. The model's mode
and parameter flags are left alone: wrap calls in :func:`evalkit.attacks.mode.attack_mode`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import torch
import torch.nn as nn
import torch.nn.functional as F

from evalkit.attacks.pgd import NORMS, random_init
from evalkit.attacks.registry import register_attack
from evalkit.defenses.context import is_stochastic
from evalkit.errors import EvalkitError

DLR_DENOM_EPS = 1e-12
MOMENTUM = 0.75
LOSSES = ("ce", "dlr")
#: ``stop_plateau``: a run stops when its best loss gained at most this fraction of the run's
#: total gain over two windows that both halved the step size (see the module docstring).
PLATEAU_TOL = 0.03
#: ``stop_plateau`` never stops a point whose closest approach in the run (untargeted DLR) is
#: above ``-PLATEAU_GUARD``: near the boundary, tiny loss gains can still decide a break.
PLATEAU_GUARD = 0.2
#: ``skip_far_targets``: remaining targets are skipped below this untargeted DLR (negated).
FAR_DLR = 0.7
#: ``stop_far``: a run stops at its first checkpoint for a point whose closest approach in the
#: run is below this untargeted DLR (negated); calibrated in ``bench/apgd_stop_far.py``.
STOP_FAR_DLR = 0.6

# loss(logits (N, K), y (N,), target (N,) or None) -> per-point loss (N,), to be maximised
LogitLoss = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


class APGDError(EvalkitError, ValueError):
    """A bad APGD argument, or a model whose number of classes leaves a loss undefined."""


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """DLR loss ``-(z_y - max_(i != y) z_i) / (z_pi1 - z_pi3 + 1e-12)``, shape (N,).

    ``logits`` (N, K) with K >= 3; ``y`` (N,) int. Positive once the point is misclassified."""
    srt = logits.sort(dim=1, descending=True).values
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return -(true - other) / (srt[:, 0] - srt[:, 2] + DLR_DENOM_EPS)


def dlr_targeted_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)``, shape (N,).

    ``logits`` (N, K) with K >= 4; ``y``, ``target`` (N,) int."""
    srt = logits.sort(dim=1, descending=True).values
    true = logits.gather(1, y[:, None]).squeeze(1)
    tgt = logits.gather(1, target[:, None]).squeeze(1)
    return -(true - tgt) / (srt[:, 0] - 0.5 * (srt[:, 2] + srt[:, 3]) + DLR_DENOM_EPS)


def _ce(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def _dlr(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    return dlr_loss(logits, y)


def _dlr_t(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    assert target is not None
    return dlr_targeted_loss(logits, y, target)


def checkpoints(n_iter: int) -> list[int]:
    """The paper's checkpoints ``w_1 < w_2 < ...`` (``w_j = ceil(p_j * n_iter)``) that lie in
    ``[1, n_iter - 2]``, where a halving can still affect a later iterate. Exact fractions, so
    ``0.22 * 100`` is 22, not 23. ``checkpoints(100) == [22, 41, 57, 70, 80, 87, 93]``."""
    prev, cur = Fraction(0), Fraction(22, 100)
    out: list[int] = []
    while cur <= 1:
        w = math.ceil(cur * n_iter)
        if 1 <= w <= n_iter - 2 and (not out or w > out[-1]):
            out.append(w)
        prev, cur = cur, cur + max(cur - prev - Fraction(3, 100), Fraction(6, 100))
    return out


def _bview(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


def _l2(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).clamp_min(1e-12)


@dataclass
class _Ball:
    """Projection onto the eps ball around ``x0`` intersected with [0, 1] (per point)."""

    norm: str
    eps: float

    def bounds(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.norm == "linf":
            return (x0 - self.eps).clamp_(min=0), (x0 + self.eps).clamp_(max=1)
        return x0, x0  # unused for L2

    def project(
        self, z: torch.Tensor, x0: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor
    ) -> torch.Tensor:
        if self.norm == "linf":
            return torch.minimum(torch.maximum(z, lo), hi)
        # ball first, then the box: clipping to [0, 1] only moves coordinates towards x0 (which
        # lies in [0, 1]), so the result stays in the ball
        d = z - x0
        d = d * _bview((self.eps / _l2(d)).clamp(max=1.0), d)
        return (x0 + d).clamp(0, 1)

    def direction(self, g: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return g.sign()
        return g / _bview(_l2(g), g)


def _evaluate(
    model: nn.Module,
    xs: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None,
    loss_fn: LogitLoss,
    eot_iter: int,
    need_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Logits (N, K), loss (N,) and, if ``need_grad``, the input gradient of the loss, each the
    mean over ``eot_iter`` forward passes (one backward per pass, so memory stays flat)."""
    logits_sum: torch.Tensor | None = None
    loss_sum: torch.Tensor | None = None
    grad_sum: torch.Tensor | None = None
    for _ in range(eot_iter):
        if need_grad:
            xr = xs.detach().requires_grad_(True)
            with torch.enable_grad():
                logits = model(xr)
                loss = loss_fn(logits, y, target)
                (grad,) = torch.autograd.grad(loss.sum(), xr)
            grad_sum = grad if grad_sum is None else grad_sum + grad
        else:
            with torch.no_grad():
                logits = model(xs)
                loss = loss_fn(logits, y, target)
        logits, loss = logits.detach(), loss.detach()
        logits_sum = logits if logits_sum is None else logits_sum + logits
        loss_sum = loss if loss_sum is None else loss_sum + loss
    assert logits_sum is not None and loss_sum is not None
    if eot_iter == 1:
        return logits_sum, loss_sum, grad_sum
    return (
        logits_sum / eot_iter,
        loss_sum / eot_iter,
        None if grad_sum is None else grad_sum / eot_iter,
    )


@dataclass
class _RunResult:
    """Per point of one run: misclassified at some iterate, the kept iterate and its loss."""

    broken: torch.Tensor  # (n,) bool
    x: torch.Tensor  # (n, ...) the misclassifying iterate if broken, else the best-loss one
    loss: torch.Tensor  # (n,)
    closest: torch.Tensor | None  # (n,) highest untargeted DLR over the iterates, if tracked


def _run(
    model: nn.Module,
    x0: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None,
    delta0: torch.Tensor,
    loss_fn: LogitLoss,
    ball: _Ball,
    n_iter: int,
    rho: float,
    early_stop: bool,
    eot_iter: int,
    plateau: tuple[float, float] | None = None,
    track_closest: bool = False,
    far: float | None = None,
) -> _RunResult:
    """One APGD run (Algorithm 1) from ``x0 + delta0`` on the points given; ``plateau`` =
    (tolerance, guard) turns on the ``stop_plateau`` rule, ``far`` (a DLR distance) the
    ``stop_far`` rule, ``track_closest`` records the closest approach (untargeted DLR, needs
    K >= 3)."""
    n = x0.shape[0]
    out_x = x0.clone()
    out_loss = torch.full((n,), float("-inf"), device=x0.device, dtype=x0.dtype)
    broken = torch.zeros(n, dtype=torch.bool, device=x0.device)
    closest = torch.full((n,), float("-inf"), device=x0.device, dtype=x0.dtype)
    lo, hi = ball.bounds(x0)
    xc = ball.project(x0 + delta0, x0, lo, hi)
    logits, f, g = _evaluate(model, xc, y, target, loss_fn, eot_iter, need_grad=n_iter > 0)
    rules = plateau is not None or far is not None
    track = (track_closest or rules) and logits.shape[1] >= 3

    # per-point state of the active rows; ``pos`` maps them to positions in this run's batch
    s: dict[str, torch.Tensor] = {
        "pos": torch.arange(n, device=x0.device),
        "x0": x0,
        "lo": lo,
        "hi": hi,
        "y": y,
        "xc": xc,  # x(k)
        "xp": xc,  # x(k-1)
        "g": g,  # grad f(x(k))
        "f": f,  # f(x(k))
        "eta": torch.full((n,), 2.0 * ball.eps, device=x0.device, dtype=x0.dtype),
        "xm": xc,  # x_max
        "fm": f,  # f_max
        "gm": g,  # grad f(x_max)
        "cnt": torch.zeros(n, dtype=torch.long, device=x0.device),  # increases this window
        "fm_last": f,  # f_max at the previous checkpoint
        "red_last": torch.zeros(n, dtype=torch.bool, device=x0.device),  # halved there
        "f0": f,  # f(x_start), for stop_plateau
        "fm_last2": f,  # f_max two checkpoints back, for stop_plateau
    }
    if target is not None:
        s["t"] = target

    def record(x_new: torch.Tensor, logits: torch.Tensor, f_new: torch.Tensor) -> torch.Tensor:
        """Keep misclassifying iterates; return the mask of misclassified active rows."""
        mis = logits.argmax(1) != s["y"]
        pos = s["pos"]
        if track:
            closest[pos] = torch.maximum(closest[pos], dlr_loss(logits, s["y"]).to(closest.dtype))
        upd = mis & (~broken[pos] | (f_new > out_loss[pos]))
        if bool(upd.any()):
            out_x[pos[upd]] = x_new[upd]
            out_loss[pos[upd]] = f_new[upd]
            broken[pos[upd]] = True
        return mis

    def compact(keep: torch.Tensor) -> None:
        for key in s:
            s[key] = s[key][keep]

    mis = record(xc, logits, f)
    if early_stop and bool(mis.any()):
        compact(~mis)
    w_list = checkpoints(n_iter)
    w_set = set(w_list)
    w_first = w_list[0] if w_list else -1
    w_prev = 0
    for k in range(n_iter):
        if s["pos"].numel() == 0:
            break
        stop: torch.Tensor | None = None
        xc, xp, b = s["xc"], s["xp"], (s["x0"], s["lo"], s["hi"])
        eta = _bview(s["eta"], xc)
        z = ball.project(xc + eta * ball.direction(s["g"]), *b)
        if k == 0:
            x_new = z
        else:
            x_new = ball.project(xc + MOMENTUM * (z - xc) + (1 - MOMENTUM) * (xc - xp), *b)
        need_grad = k + 1 < n_iter
        logits, f_new, g_new = _evaluate(
            model, x_new, s["y"], s.get("t"), loss_fn, eot_iter, need_grad
        )
        inc = f_new > s["f"]
        better = f_new > s["fm"]
        if bool(better.any()):
            bv = _bview(better, x_new)
            s["xm"] = torch.where(bv, x_new, s["xm"])
            s["fm"] = torch.where(better, f_new, s["fm"])
            if g_new is not None:
                s["gm"] = torch.where(bv, g_new, s["gm"])
        mis = record(x_new, logits, f_new)
        if k == 0:
            s["fm_last"] = s["fm"]  # f_max(w_0) = max(f(x0), f(x1))
        if k in w_set:
            cond1 = s["cnt"].to(x_new.dtype) < rho * (k - w_prev)
            cond2 = ~s["red_last"] & (s["fm"] == s["fm_last"])
            halve = cond1 | cond2
            if plateau is not None and track:
                tol, guard = plateau
                gain = s["fm"] - s["fm_last2"]
                stop = halve & s["red_last"] & (gain <= tol * (s["fm"] - s["f0"]))
                stop &= closest[s["pos"]] < -guard
            if far is not None and track and k == w_first:
                far_stop = closest[s["pos"]] < -far
                stop = far_stop if stop is None else stop | far_stop
            s["fm_last2"] = s["fm_last"]
            if bool(halve.any()):
                hv = _bview(halve, x_new)
                s["eta"] = torch.where(halve, s["eta"] / 2, s["eta"])
                x_new = torch.where(hv, s["xm"], x_new)
                f_new = torch.where(halve, s["fm"], f_new)
                if g_new is not None:
                    g_new = torch.where(hv, s["gm"], g_new)
            s["red_last"] = halve
            s["fm_last"] = s["fm"]
            s["cnt"] = torch.zeros_like(s["cnt"])
            w_prev = k
        s["cnt"] = s["cnt"] + inc.long()
        s["xp"], s["xc"], s["f"] = xc, x_new, f_new
        if g_new is not None:
            s["g"] = g_new
        drop = mis if early_stop else torch.zeros_like(mis)
        if stop is not None and bool(stop.any()):
            # plateaued: x_max is the result, as at the end of the run (a point broken earlier,
            # early_stop=False, keeps its misclassifying iterate)
            new = stop & ~broken[s["pos"]]
            out_x[s["pos"][new]] = s["xm"][new]
            out_loss[s["pos"][new]] = s["fm"][new]
            drop = drop | stop
        if bool(drop.any()):
            compact(~drop)

    # points never misclassified: their best-loss iterate
    pos = s["pos"]
    keep = ~broken[pos]
    out_x[pos[keep]] = s["xm"][keep]
    out_loss[pos[keep]] = s["fm"][keep]
    return _RunResult(broken=broken, x=out_x, loss=out_loss, closest=closest if track else None)


def _check_args(
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    norm: str,
    n_iter: int,
    n_restarts: int,
    rho: float,
    eot_iter: int,
) -> None:
    if norm not in NORMS:
        raise APGDError(f"APGD norm must be one of {', '.join(NORMS)}, not {norm!r}")
    if not (math.isfinite(eps) and eps >= 0):
        raise APGDError(f"APGD needs a finite eps >= 0, got {eps}")
    if int(n_iter) < 1 or int(n_restarts) < 1 or int(eot_iter) < 1:
        raise APGDError(
            f"APGD needs n_iter, n_restarts and eot_iter >= 1 (got {n_iter}, {n_restarts}, "
            f"{eot_iter})"
        )
    if not 0 < rho <= 1:
        raise APGDError(f"APGD rho must lie in (0, 1], got {rho}")
    if x.ndim < 2 or y.shape != (x.shape[0],):
        raise APGDError(
            f"APGD needs x (N, ...) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}"
        )


def _attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    runs: Callable[[torch.Tensor], list[tuple[LogitLoss, torch.Tensor | None]]],
    *,
    eps: float,
    norm: str,
    n_iter: int,
    n_restarts: int,
    rho: float,
    early_stop: bool,
    eot_iter: int,
    generator: torch.Generator | None,
    stop_plateau: bool = False,
    stop_far: bool = False,
    skip_far_after: int | None = None,
) -> torch.Tensor:
    """Clean forward, then each (loss, targets) run ``n_restarts`` times on the still-robust
    points; ``runs(clean_logits)`` validates the class count and lists the runs.
    ``skip_far_after=j``: from the ``j``-th entry of that list on, points whose closest approach
    so far is below ``-FAR_DLR`` are no longer attacked (``skip_far_targets``)."""
    x = x.detach()
    y = y.to(x.device)
    if early_stop and is_stochastic(model):
        raise APGDError(
            "APGD early_stop needs a deterministic model (this one declares itself stochastic); "
            "use early_stop=False with eot_iter > 1"
        )
    ball = _Ball(norm, float(eps))
    logits, _, _ = _evaluate(model, x, y, None, _ce, eot_iter, need_grad=False)
    plan = runs(logits)
    out = x.clone()
    best = torch.full((x.shape[0],), float("-inf"), device=x.device, dtype=x.dtype)
    robust = logits.argmax(1) == y
    attacked = robust.clone()  # robust and not given up by skip_far_targets
    closest = torch.full((x.shape[0],), float("-inf"), device=x.device, dtype=x.dtype)
    for j, (loss_fn, targets) in enumerate(plan):
        if skip_far_after is not None and j >= skip_far_after:
            attacked &= closest >= -FAR_DLR
        for _ in range(int(n_restarts)):
            idx = attacked.nonzero().squeeze(1)
            if idx.numel() == 0:
                return out
            delta0 = random_init(x, float(eps), norm, generator)  # whole batch: see module doc
            res = _run(
                model,
                x[idx],
                y[idx],
                None if targets is None else targets[idx],
                delta0[idx],
                loss_fn,
                ball,
                int(n_iter),
                float(rho),
                early_stop,
                int(eot_iter),
                plateau=(PLATEAU_TOL, PLATEAU_GUARD) if stop_plateau else None,
                track_closest=skip_far_after is not None,
                far=STOP_FAR_DLR if stop_far else None,
            )
            keep = res.broken | (res.loss > best[idx])
            out[idx[keep]] = res.x[keep]
            best[idx[keep]] = res.loss[keep]
            robust[idx[res.broken]] = False
            attacked[idx[res.broken]] = False
            if res.closest is not None:
                closest[idx] = torch.maximum(closest[idx], res.closest)
    return out


def _loss_name(loss: object) -> str:
    """``"ce"`` or ``"dlr"`` from a name, or from a harness loss built for it
    (:func:`~evalkit.attacks.losses.make_loss` names its function ``ce``/``dlr``, an EOT wrapper
    ``eot<n>_<name>``; APGD computes the loss itself and averages over ``eot_iter`` draws)."""
    name = loss if isinstance(loss, str) else getattr(loss, "__name__", "")
    if not isinstance(loss, str) and name.startswith("eot"):
        name = name.partition("_")[2]
    if name not in LOSSES:
        raise APGDError(
            f"APGD takes the loss 'ce' or 'dlr' (by name), not {name or loss!r}: for a joint "
            "(auxiliary-head) loss use pgd; for EOT pass eot_iter"
        )
    return name


@register_attack(
    "apgd",
    norms=NORMS,
    white_box=True,
    base_loss="ce",
    description="APGD (Croce & Hein 2020), evalkit's own, CE loss (loss='dlr': DLR), 100 "
    "iterations, 1 restart, per-point early exit; stop_plateau and stop_far stop points with "
    "nothing left to gain",
    iterative=True,
    aliases=("apgd-ce",),
)
@register_attack(
    "apgd-dlr",
    norms=NORMS,
    white_box=True,
    base_loss="dlr",
    description="APGD with the DLR loss (the apgd entry with loss 'dlr')",
    iterative=True,
    min_classes=3,
)
def apgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    loss: str = "ce",
    n_iter: int = 100,
    n_restarts: int = 1,
    rho: float = 0.75,
    stop_plateau: bool = False,
    stop_far: bool = False,
    early_stop: bool = True,
    keep_best: bool = True,
    eot_iter: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Untargeted APGD (Croce & Hein 2020, Algorithm 1) with the CE or DLR loss.

    ``model`` maps (N, C, H, W) floats in [0, 1] to logits (N, K); ``y`` (N,) int labels.
    Returns ``x_adv`` (same shape and dtype as ``x``) within the ``norm`` ball of radius ``eps``
    and in [0, 1]: per point, the first misclassifying iterate found (the highest-loss one when
    ``early_stop=False``), else the highest-loss iterate; ``x`` itself where the clean input is
    already misclassified. Restarts attack only the points still robust. ``stop_plateau`` ends a
    point's run once it has plateaued, ``stop_far`` at the first checkpoint when it is still far
    from the boundary (module docstring); ``keep_best`` changes nothing. See
    the module docstring for compaction, EOT and the random starts.

    Raises :class:`APGDError` (a ``ValueError``) for bad arguments, a loss other than ``"ce"``
    or ``"dlr"`` (a harness loss built for one of them is accepted), ``early_stop`` on a model
    that declares itself stochastic, and for ``loss="dlr"`` with fewer than 3 classes (DLR is
    undefined there; use ``loss="ce"``).
    """
    _check_args(x, y, eps, norm, n_iter, n_restarts, rho, eot_iter)
    loss = _loss_name(loss)

    def runs(logits: torch.Tensor) -> list[tuple[LogitLoss, torch.Tensor | None]]:
        k = int(logits.shape[1])
        if loss == "dlr" and k < 3:
            raise APGDError(
                f"the DLR loss needs at least 3 classes (the model has {k}): use APGD-CE "
                "(loss='ce') instead"
            )
        return [(_dlr if loss == "dlr" else _ce, None)]

    return _attack(
        model,
        x,
        y,
        runs,
        eps=eps,
        norm=norm,
        n_iter=n_iter,
        n_restarts=n_restarts,
        rho=rho,
        early_stop=early_stop,
        eot_iter=eot_iter,
        generator=generator,
        stop_plateau=stop_plateau,
        stop_far=stop_far,
    )


def target_classes(logits: torch.Tensor, y: torch.Tensor, n_targets: int) -> torch.Tensor:
    """(N, n_targets): per point, the classes other than ``y`` with the highest logits, in
    decreasing order (APGD-T's targets, chosen on the clean input)."""
    masked = logits.scatter(1, y[:, None], float("-inf"))
    return masked.argsort(dim=1, descending=True, stable=True)[:, :n_targets]


def _target_runs(
    y: torch.Tensor, n_target_classes: int, what: str
) -> Callable[[torch.Tensor], list[tuple[LogitLoss, torch.Tensor | None]]]:
    if int(n_target_classes) < 1:
        raise APGDError(f"{what} needs n_target_classes >= 1, got {n_target_classes}")

    def runs(logits: torch.Tensor) -> list[tuple[LogitLoss, torch.Tensor | None]]:
        k = int(logits.shape[1])
        if k < 4:
            raise APGDError(
                f"APGD-T's targeted DLR loss needs at least 4 classes (the model has {k}): use "
                "APGD-CE (apgd with loss='ce') instead"
            )
        targets = target_classes(logits, y.to(logits.device), min(int(n_target_classes), k - 1))
        return [(_dlr_t, targets[:, j]) for j in range(targets.shape[1])]

    return runs


@register_attack(
    "apgd-t",
    norms=NORMS,
    white_box=True,
    base_loss="dlr",
    description="APGD-T (Croce & Hein 2020), evalkit's own: targeted DLR, 9 targets by clean "
    "logit x 100 iterations, per-point early exit; stop_plateau and stop_far stop points with "
    "nothing left to gain",
    iterative=True,
    min_classes=4,
)
def apgd_targeted(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    n_iter: int = 100,
    n_restarts: int = 1,
    n_target_classes: int = 9,
    rho: float = 0.75,
    stop_plateau: bool = False,
    stop_far: bool = False,
    early_stop: bool = True,
    keep_best: bool = True,
    eot_iter: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """APGD-T: APGD with the targeted DLR loss, one run per target class (Croce & Hein 2020).

    Targets: per point, the ``min(n_target_classes, K - 1)`` classes other than ``y`` with the
    highest clean logits, attacked in that order, each ``n_restarts`` times, each on the points
    still robust. Success is misclassification. Shapes, the result and the options are as in
    :func:`apgd`.

    Raises :class:`APGDError` (a ``ValueError``) for bad arguments, ``early_stop`` on a
    stochastic model, and for fewer than 4 classes (the targeted DLR denominator needs ``z_pi3``
    and ``z_pi4``; use APGD-CE).
    """
    _check_args(x, y, eps, norm, n_iter, n_restarts, rho, eot_iter)
    return _attack(
        model,
        x,
        y,
        _target_runs(y, n_target_classes, "APGD-T"),
        eps=eps,
        norm=norm,
        n_iter=n_iter,
        n_restarts=n_restarts,
        rho=rho,
        early_stop=early_stop,
        eot_iter=eot_iter,
        generator=generator,
        stop_plateau=stop_plateau,
        stop_far=stop_far,
    )


@register_attack(
    "apgd-ce-t",
    norms=NORMS,
    white_box=True,
    base_loss="ce",
    description="APGD-CE then APGD-T on the points still robust, in one call (the attacks of "
    "AutoAttack version custom [apgd-ce, apgd-t]); stop_plateau, stop_far and skip_far_targets "
    "cut the cost of points with nothing left to gain",
    iterative=True,
    min_classes=4,
)
def apgd_ce_t(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    n_iter: int = 100,
    n_restarts: int = 1,
    n_target_classes: int = 9,
    rho: float = 0.75,
    stop_plateau: bool = False,
    stop_far: bool = False,
    skip_far_targets: bool = False,
    early_stop: bool = True,
    keep_best: bool = True,
    eot_iter: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """APGD-CE, then APGD-T on the points it left robust, sharing per-point state.

    Without the stopping rules this is :func:`apgd` (CE) followed by :func:`apgd_targeted` on
    the points still robust, with the random starts drawn for the whole batch at every run.
    ``skip_far_targets`` lets a point skip the targets after the first when its closest approach
    to the boundary over APGD-CE and the first target stayed below ``-FAR_DLR`` (module
    docstring: the rule and its calibration); it needs APGD-CE's runs, hence this function.
    Shapes, the result and the other options are as in :func:`apgd`.

    Raises :class:`APGDError` (a ``ValueError``) for bad arguments, ``early_stop`` on a
    stochastic model, and for fewer than 4 classes (use :func:`apgd` with CE).
    """
    _check_args(x, y, eps, norm, n_iter, n_restarts, rho, eot_iter)
    targeted = _target_runs(y, n_target_classes, "APGD-CE + APGD-T")

    def runs(logits: torch.Tensor) -> list[tuple[LogitLoss, torch.Tensor | None]]:
        return [(_ce, None), *targeted(logits)]

    return _attack(
        model,
        x,
        y,
        runs,
        eps=eps,
        norm=norm,
        n_iter=n_iter,
        n_restarts=n_restarts,
        rho=rho,
        early_stop=early_stop,
        eot_iter=eot_iter,
        generator=generator,
        stop_plateau=stop_plateau,
        stop_far=stop_far,
        skip_far_after=2 if skip_far_targets else None,
    )
