"""AutoAttack (Croce & Hein 2020) through the ``pyautoattack`` package, not a rewrite.

Versions (set by pyautoattack, checked by the tests):

* ``standard``: APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square (5000 queries);
* ``plus``: APGD-CE and APGD-DLR (5 restarts), FAB (5 restarts), Square, APGD-T, FAB-T;
* ``rand``: APGD-CE and APGD-DLR with EOT over 20 samples (for randomised defenses);
* ``custom``: the ``attacks`` list you give (``apgd-ce``, ``apgd-dlr``, ``apgd-t``, ``fab``,
  ``fab-t``, ``square``), with pyautoattack's constructor settings (APGD 100 iterations,
  5 restarts) unless overridden by ``n_iter`` / ``n_restarts`` / ``n_queries`` / ``eot_iter``.

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

import torch
import torch.nn as nn

from evalkit.attacks._external import external_call, finalize, seed_from
from evalkit.errors import EvalkitError

log = logging.getLogger("evalkit.attacks.autoattack")

VERSIONS = ("standard", "plus", "rand", "custom")
AA_ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
_NORMS = {"linf": "Linf", "l2": "L2", "l1": "L1"}


class _Forward(logging.Handler):
    """Re-emit pyautoattack's log records on evalkit's logger (keeps their level)."""

    def emit(self, record: logging.LogRecord) -> None:
        log.log(record.levelno, "%s", record.getMessage())


@contextmanager
def _captured_logs() -> Iterator[None]:
    aa_log = logging.getLogger("auto-attack")
    handler = _Forward()
    old = (aa_log.propagate, aa_log.level)
    aa_log.addHandler(handler)
    aa_log.propagate = False
    aa_log.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        aa_log.removeHandler(handler)
        aa_log.propagate = old[0]
        aa_log.setLevel(old[1])


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
    """A configured ``pyautoattack.AutoAttack`` (see the module docstring for the versions)."""
    from pyautoattack import AutoAttack

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
    if num_classes is not None and num_classes - 1 < 9:
        aa.apgd_targeted.n_target_classes = max(num_classes - 1, 1)
        aa.fab.n_target_classes = max(num_classes - 1, 1)
    for sub in (aa.apgd, aa.apgd_targeted):
        if n_iter is not None:
            sub.n_iter = int(n_iter)
    if n_iter is not None:
        aa.fab.n_iter = int(n_iter)
    if n_restarts is not None:
        aa.apgd.n_restarts = int(n_restarts)
        aa.fab.n_restarts = int(n_restarts)
    if n_queries is not None:
        aa.square.n_queries = int(n_queries)
    if eot_iter is not None:
        aa.apgd.eot_iter = int(eot_iter)
    return aa


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
    **overrides,
) -> torch.Tensor:
    """Run AutoAttack on one batch; return ``x_adv`` (unchanged where it failed).

    ``seed`` defaults to one draw from ``generator`` (so per-batch seeds make runs
    reproducible), never to wall time as pyautoattack would. ``overrides``: ``n_iter``,
    ``n_restarts``, ``n_queries``, ``eot_iter`` (see :func:`build_autoattack`).
    """
    if isinstance(attacks, str):
        attacks = [a.strip() for a in attacks.split(",") if a.strip()]
    seed_value = seed_from(generator, seed)
    with external_call(model, x, seed_value), _captured_logs():
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
            **overrides,
        )
        tracer = sys.gettrace()  # pyautoattack's dynamic-defense check ends with settrace(None)
        try:
            x_adv, _ = aa.run_standard_evaluation(
                x.detach(), y.detach(), batch_size=int(batch_size or max(len(x), 1))
            )
        finally:
            sys.settrace(tracer)
    return finalize(x_adv, x, eps, norm)
