"""The file judges the study catalog calls: ``judge_<study>(ctx)`` reads what the study's
commands wrote (:mod:`analysis.studies.rundirs`), judges it (the pure judges
:mod:`~analysis.studies.judge_channels`, :mod:`~analysis.studies.judge_cas_cifs`,
:mod:`~analysis.studies.judge_he`, :mod:`~analysis.studies.judge_sap`,
:mod:`~analysis.studies.judge_pooling`), applies the training-seed rule and adds the
mechanism notes (:mod:`analysis.studies.mechanisms`). Verdicts come from measured numbers, with
intervals; the rules are in :mod:`analysis.studies.stats` (``verdict``, ``at_most``, ``guard``,
``combine``), and each judge module's docstring says, per claim, which effect is measured, in
which direction, and which guard applies.

Layers:

* **values** (:mod:`analysis.studies.values`): :class:`Points` (per-test-point values, one row
  per training seed), :class:`RunPoints` (one model's harness run), :class:`Features`
  (per-image channel means), :class:`PoolingModel`, and the helpers that state a finding.
* **pure judges** (``channels_findings``, ``cas_cifs_findings``, ``he_findings``,
  ``sap_findings``, ``pooling_findings``) take those values and return one :class:`Finding`
  per claim. They read no files, so each rule has a unit test on constructed numbers.
* **readers** (:mod:`analysis.studies.rundirs`): one folder per training seed into values.
* **file judges** (this module): the three together. With fewer than
  :data:`~analysis.studies.values.MIN_TRAINING_SEEDS` (3) seeds every verdict is reported
  inconclusive.

Kept under ``analysis/studies/`` on purpose: the study step digest leaves this folder out
(:data:`evalkit.evaluation.fingerprint.NOT_STEP_CODE`), so a judge edited after a run re-judges
the same measurements instead of invalidating them.

History: the first version (single seed, point estimates, a fixed 1-point gap) was replaced by
these rules after issue 11; its verdicts are not comparable.
"""

from __future__ import annotations

from analysis.studies import mechanisms
from analysis.studies.judge_cas_cifs import cas_cifs_findings
from analysis.studies.judge_channels import channels_findings
from analysis.studies.judge_he import he_findings
from analysis.studies.judge_pooling import pooling_findings
from analysis.studies.judge_sap import sap_findings
from analysis.studies.rundirs import (
    load_features,
    load_pooling_models,
    load_run_points,
    load_sap_points,
    seed_analysis_dirs,
    seed_run_dirs,
)
from analysis.studies.spec import Finding, StudyContext
from analysis.studies.values import apply_seed_rule

# the models of the CAS/CIFS study: each base objective, and each with either plugin
CAS_CIFS_KEYS = (
    "at",
    "trades",
    "mart",
    "at_cas",
    "trades_cas",
    "mart_cas",
    "at_cifs",
    "trades_cifs",
    "mart_cifs",
)


def judge_cas_cifs(ctx: StudyContext) -> list[Finding]:
    """Every CAS/CIFS model whose runs exist for every seed; pairs without both are skipped."""
    runs = {}
    for key in CAS_CIFS_KEYS:
        dirs = seed_run_dirs(ctx, key)
        if dirs and all((d / "summary.json").exists() for d in dirs):
            runs[key] = load_run_points(dirs)
    return mechanisms.cas_cifs(apply_seed_rule(cas_cifs_findings(runs, seed=ctx.seed), ctx), ctx)


def judge_he(ctx: StudyContext) -> list[Finding]:
    found = he_findings(
        load_run_points(seed_run_dirs(ctx, "at")),
        load_run_points(seed_run_dirs(ctx, "at_he")),
        seed=ctx.seed,
    )
    return mechanisms.he(apply_seed_rule(found, ctx), ctx)


def judge_channels(ctx: StudyContext) -> list[Finding]:
    labels = ("std", "at", "at_cas")
    feats, threshold = load_features(seed_analysis_dirs(ctx, "channels"), labels)
    found = channels_findings(feats, threshold=threshold, labels=labels, seed=ctx.seed)
    return mechanisms.channels(apply_seed_rule(found, ctx), ctx)


def judge_sap(ctx: StudyContext) -> list[Finding]:
    """Judged on the standard-trained checkpoint at the smallest eps of the sweep: at larger
    budgets the dense model is at 0% and SAP cannot look robust at all."""
    pts = load_sap_points(seed_analysis_dirs(ctx, "sap-eot"))
    found = sap_findings(pts.dense, pts.sap, eps=pts.eps, seed=ctx.seed, extra=pts.extra)
    return mechanisms.sap(apply_seed_rule(found, ctx))


def judge_pooling(ctx: StudyContext) -> list[Finding]:
    """Reads ``analysis.json`` scalars (robust accuracy, n) and, when present, per-model
    ``points_<label>.npz`` (keys ``index``, ``robust``, ``clean``, ``change_rel``)."""
    models, per_label = load_pooling_models(seed_analysis_dirs(ctx, "pooling"))
    found = apply_seed_rule(pooling_findings(models, seed=ctx.seed), ctx)
    return mechanisms.pooling(found, per_label, models, seed=ctx.seed)


__all__ = ["judge_cas_cifs", "judge_channels", "judge_he", "judge_pooling", "judge_sap"]
