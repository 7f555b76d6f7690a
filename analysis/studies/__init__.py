"""Reproduction studies of the seed papers' findings (``evalkit study NAME --scale cpu|gpu``)."""

from analysis.studies.catalog import SCALES, STUDIES
from analysis.studies.runner import list_studies, run_study, scale_for

__all__ = ["SCALES", "STUDIES", "list_studies", "run_study", "scale_for"]
