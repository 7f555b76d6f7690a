"""What judges the reproduction studies: :mod:`analysis.studies.judges` (the entry points the
catalog calls), one pure judge module per study (``judge_channels``, ``judge_cas_cifs``,
``judge_he``, ``judge_sap``, ``judge_pooling``: verdicts from measured numbers),
:mod:`analysis.studies.values` (the typed values they take), :mod:`analysis.studies.rundirs`
(reading run folders into them), :mod:`analysis.studies.stats` (the interval rules) and
:mod:`analysis.studies.spec` (the :class:`~analysis.studies.spec.Finding` and
:class:`~analysis.studies.spec.StudyContext` they exchange). The studies themselves are run by
:mod:`evalkit.pipelines.studies`.
"""
