"""What judges the reproduction studies: :mod:`analysis.studies.judges` (verdicts from measured
numbers), :mod:`analysis.studies.stats` (the interval rules) and :mod:`analysis.studies.spec`
(the :class:`~analysis.studies.spec.Finding` and :class:`~analysis.studies.spec.StudyContext`
they exchange). The studies themselves are run by :mod:`evalkit.pipelines.studies`.
"""
