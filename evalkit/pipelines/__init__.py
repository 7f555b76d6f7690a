"""Pipelines: multi-step jobs written as calls of the library API.

* :mod:`evalkit.pipelines.demo` — ``evalkit demo``: train three models, evaluate, analyse,
  report;
* :mod:`evalkit.pipelines.studies` — ``evalkit study``: the seed papers' reproduction studies,
  each step a Python call keyed by the content of its inputs;
* :mod:`evalkit.pipelines.pooling` — the feature-map/pooling model grid of the pooling study.

Layering: the CLI (``evalkit/commands``) calls pipelines; pipelines call the library API
(:func:`evalkit.training.api.train`, :func:`evalkit.evaluation.api.evaluate`,
:func:`evalkit.analyses.analyze`, :func:`evalkit.reporting.report`) and never the CLI.
"""
