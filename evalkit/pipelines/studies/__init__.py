"""Reproduction studies of the seed papers' findings (``evalkit study NAME --scale SCALE``).

:func:`run_study` plans a study's steps (train every model for every seed, evaluate, analyse),
runs them with content-keyed reuse (:class:`StepRunner`), judges the claims with
:mod:`analysis.studies.judges` and writes findings and a report.
"""

from evalkit.pipelines.studies.catalog import SCALES, STUDIES
from evalkit.pipelines.studies.runner import (
    StepRunner,
    get_study,
    list_studies,
    plan,
    run_study,
    scale_for,
)
from evalkit.pipelines.studies.steps import Step

__all__ = [
    "SCALES",
    "STUDIES",
    "Step",
    "StepRunner",
    "get_study",
    "list_studies",
    "plan",
    "run_study",
    "scale_for",
]
