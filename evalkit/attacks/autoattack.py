"""AutoAttack (Croce & Hein 2020) through the ``pyautoattack`` package, not a rewrite.

Versions (set by pyautoattack, checked by the tests):

* ``standard``: APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square (5000 queries);
* ``plus``: APGD-CE and APGD-DLR (5 restarts), FAB (5 restarts), Square, APGD-T, FAB-T;
* ``rand``: APGD-CE and APGD-DLR with EOT over 20 samples (for randomised defenses);
* ``custom``: the ``attacks`` list you give (``apgd-ce``, ``apgd-dlr``, ``apgd-t``, ``fab``,
  ``fab-t``, ``square``), with pyautoattack's constructor settings (APGD 100 iterations,
  5 restarts) unless overridden by ``n_iter`` / ``n_restarts`` / ``n_queries`` / ``eot_iter``.

``eot_iter`` (any version) sets Expectation over Transformation on every sub-attack that
supports it in pyautoattack: APGD-CE, APGD-DLR and APGD-T (FAB has no EOT; the ``report`` says
so). With fewer than 3 classes APGD-DLR, with fewer than 4 APGD-T, are skipped with the reason
recorded (DLR losses read the 3rd/4th largest logit).

AutoAttack uses its own losses (CE, DLR, margin), so the evalkit ``loss`` is ignored: for
auxiliary-head defenses it attacks the final logits, which is what ``model(x)`` returns. The
model is attacked in eval mode with parameter gradients off; with fewer than 10 classes the
number of target classes is reduced to ``classes - 1``. Its log messages (e.g. "it seems to be
a randomized defense") go to the ``evalkit.attacks.autoattack`` logger; prints go to stderr.
The output is projected back into the Linf/L2 ball and clipped to [0, 1]; for L1 it is only
clipped (pyautoattack's L1 attacks project themselves).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn as nn

from evalkit.attacks._external import external_call, finalize, seed_from
from evalkit.attacks.registry import register_attack
from evalkit.errors import EvalkitError

log = logging.getLogger("evalkit.attacks.autoattack")

VERSIONS = ("standard", "plus", "rand", "custom")
AA_ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
_NORMS = {"linf": "Linf", "l2": "L2", "l1": "L1"}


#: Fewest classes each sub-attack works with: DLR divides by ``z_(1) - z_(3)`` (3 classes);
#: targeted DLR by ``z_(1) - (z_(3) + z_(4)) / 2`` (4 classes). FAB-T targets the runner-up
#: classes and runs with any 2 or more (its loss is not DLR), so it is kept.
MIN_CLASSES = {"apgd-ce": 2, "apgd-dlr": 3, "apgd-t": 4, "fab": 2, "fab-t": 2, "square": 2}


class _Forward(logging.Handler):
    """Re-emit pyautoattack's log records on evalkit's logger (keeps their level) and note the
    sub-attacks it starts (its ``running <attack>`` records)."""

    def __init__(self) -> None:
        super().__init__()
        self.ran: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("running ") and message[8:] in AA_ATTACKS:
            self.ran.append(message[8:])
        elif message.startswith("no robust datapoints left") and self.ran:
            self.ran.pop()  # logged as "running X" just before it found nothing left to attack
        log.log(record.levelno, "%s", message)


@contextmanager
def _captured_logs() -> Iterator[_Forward]:
    aa_log = logging.getLogger("auto-attack")
    handler = _Forward()
    old = (aa_log.propagate, aa_log.level)
    aa_log.addHandler(handler)
    aa_log.propagate = False
    aa_log.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        aa_log.removeHandler(handler)
        aa_log.propagate = old[0]
        aa_log.setLevel(old[1])


def _check_request(norm: str, version: str, attacks: Sequence[str] | None) -> None:
    if version not in VERSIONS:
        raise EvalkitError(
            f"unknown AutoAttack version {version!r} (use one of {', '.join(VERSIONS)})"
        )
    if norm not in _NORMS:
        raise EvalkitError(f"AutoAttack supports norms {', '.join(_NORMS)}, not {norm!r}")
    if version == "custom":
        if not attacks:
            raise EvalkitError(
                "AutoAttack version 'custom' needs an attacks list, e.g. apgd-ce,square"
            )
        bad = [a for a in attacks if a not in AA_ATTACKS]
        if bad:
            raise EvalkitError(
                f"unknown AutoAttack attack(s) {', '.join(bad)} (known: {', '.join(AA_ATTACKS)})"
            )
    elif attacks:
        raise EvalkitError(f"an AutoAttack attacks list needs version='custom', not {version!r}")


def build_autoattack(
    model: nn.Module,
    eps: float,
    *,
    norm: str = "linf",
    version: str = "standard",
    attacks: Sequence[str] | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    num_classes: int | None = None,
    n_iter: int | None = None,
    n_restarts: int | None = None,
    n_queries: int | None = None,
    eot_iter: int | None = None,
):
    """A configured ``pyautoattack.AutoAttack`` (see the module docstring for the versions).

    ``num_classes`` (when given) lowers the target-class counts to ``num_classes - 1`` and
    drops the sub-attacks that need more classes (:data:`MIN_CLASSES`); the reasons are in the
    returned object's ``evalkit_skipped`` dict. ``eot_iter`` is set on every sub-attack that
    has the setting (APGD-CE/DLR and APGD-T; pyautoattack's FAB has none).
    """
    from pyautoattack import AutoAttack

    _check_request(norm, version, attacks)
    if eot_iter is not None and int(eot_iter) < 1:
        raise EvalkitError(f"AutoAttack eot_iter must be >= 1, got {eot_iter}")
    aa = AutoAttack(
        model,
        attacks=list(attacks) if attacks else None,
        device=device,
        eps=float(eps),
        norm=_NORMS[norm],
        seed=int(seed),
        version=version,
    )
    aa.verbose = False
    skipped: dict[str, str] = {}
    if num_classes is not None:
        if num_classes - 1 < 9:
            aa.apgd_targeted.n_target_classes = max(num_classes - 1, 1)
            aa.fab.n_target_classes = max(num_classes - 1, 1)
        for name in list(aa.attacks_to_run):
            need = MIN_CLASSES[name]
            if num_classes < need:
                loss = "targeted DLR" if name == "apgd-t" else "DLR"
                skipped[name] = f"{loss} loss needs >= {need} classes, the model has {num_classes}"
        aa.attacks_to_run = [a for a in aa.attacks_to_run if a not in skipped]
    for sub in (aa.apgd, aa.apgd_targeted):
        if n_iter is not None:
            sub.n_iter = int(n_iter)
        if eot_iter is not None:
            sub.eot_iter = int(eot_iter)
    if n_iter is not None:
        aa.fab.n_iter = int(n_iter)
    if n_restarts is not None:
        aa.apgd.n_restarts = int(n_restarts)
        aa.fab.n_restarts = int(n_restarts)
    if n_queries is not None:
        aa.square.n_queries = int(n_queries)
    aa.evalkit_skipped = skipped
    return aa


def eot_settings(aa) -> dict[str, int]:
    """EOT samples each planned gradient sub-attack of ``aa`` uses (FAB: always 1)."""
    out = {}
    for name in aa.attacks_to_run:
        if name in ("apgd-ce", "apgd-dlr"):
            out[name] = int(aa.apgd.eot_iter)
        elif name == "apgd-t":
            out[name] = int(aa.apgd_targeted.eot_iter)
        elif name in ("fab", "fab-t"):
            out[name] = 1
    return out


@register_attack(
    "aa_rand",
    norms=tuple(_NORMS),
    white_box=True,
    base_loss=None,
    description="AutoAttack 'rand' (APGD-CE/DLR with EOT over 20 samples) for randomized models",
    version="rand",
)
@register_attack(
    "aa_plus",
    norms=tuple(_NORMS),
    white_box=True,
    base_loss=None,
    description="AutoAttack 'plus' (APGD-CE/DLR 5 restarts, FAB, Square, APGD-T, FAB-T)",
    version="plus",
)
@register_attack(
    "autoattack",
    norms=tuple(_NORMS),
    white_box=True,
    base_loss=None,
    description="AutoAttack via pyautoattack ('standard': APGD-CE, APGD-T, FAB-T, Square)",
    aliases=("aa",),
)
def autoattack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    norm: str = "linf",
    version: str = "standard",
    attacks: Sequence[str] | str | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    n_iter: int | None = None,
    n_restarts: int | None = None,
    n_queries: int | None = None,
    eot_iter: int | None = None,
    report: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Run AutoAttack on one batch ``x`` (N, ...) in [0, 1]; return ``x_adv`` (the input where
    every sub-attack failed), projected into the ``norm`` ball and [0, 1].

    ``seed`` defaults to one draw from ``generator`` (so per-batch seeds make runs
    reproducible), never to wall time as pyautoattack would. ``n_iter``, ``n_restarts``,
    ``n_queries``, ``eot_iter``: see :func:`build_autoattack` (``None``: pyautoattack's value
    for the version). Sub-attacks that need more classes than the model has are skipped.

    ``report`` (a dict, filled in place) says what actually ran: ``version``; ``attacks`` (the
    sub-attacks configured, after skips); ``ran`` (those pyautoattack started: it stops once no
    point is left unbroken); ``skipped`` (sub-attack -> reason); ``eot_iter`` (gradient
    sub-attack -> EOT samples; FAB is always 1, see ``notes``); ``notes`` (list of str).
    """
    if isinstance(attacks, str):
        attacks = [a.strip() for a in attacks.split(",") if a.strip()]
    _check_request(norm, version, attacks)
    seed_value = seed_from(generator, seed)
    with external_call(model, x, seed_value), _captured_logs() as logs:
        with torch.no_grad():
            num_classes = int(model(x[:1]).shape[1])
        aa = build_autoattack(
            model,
            eps,
            norm=norm,
            version=version,
            attacks=attacks,
            seed=seed_value,
            device=x.device,
            num_classes=num_classes,
            n_iter=n_iter,
            n_restarts=n_restarts,
            n_queries=n_queries,
            eot_iter=eot_iter,
        )
        planned = list(aa.attacks_to_run)
        tracer = sys.gettrace()  # pyautoattack's dynamic-defense check ends with settrace(None)
        try:
            if planned:
                x_adv, _ = aa.run_standard_evaluation(
                    x.detach(), y.detach(), batch_size=int(batch_size or max(len(x), 1))
                )
            else:
                x_adv = x.detach().clone()
        finally:
            sys.settrace(tracer)
    if report is not None:
        eot = eot_settings(aa)
        notes = []
        fab = [a for a in planned if a in ("fab", "fab-t")]
        if fab and max(eot.values(), default=1) > 1:
            notes.append(f"{', '.join(fab)}: pyautoattack's FAB has no EOT (single draws)")
        report.update(
            version=version,
            attacks=planned,
            ran=list(logs.ran),
            skipped=dict(aa.evalkit_skipped),
            eot_iter=eot,
            notes=notes,
        )
    return finalize(x_adv, x, eps, norm)
