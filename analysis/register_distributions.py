"""Registers :func:`analysis.distributions.run_distribution_study` as the ``distributions``
analysis of :func:`evalkit.analyze` (CLI: ``evalkit analyze --analysis distributions``), kept
apart from ``analysis/distributions.py`` as ``register_channels.py`` is for ``channels``.

>>> from evalkit.analyses import analyze
>>> res = analyze({"std": "runs/std/checkpoint.pt", "at": "runs/at/checkpoint.pt"},
...               analysis="distributions", layer="layer3,layer4", eps="8/255", n=200,
...               out="out/distributions")                                  # doctest: +SKIP
>>> res.value.summary   # per model, layer, kind (natural | adversarial) and statistic  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from analysis.options import pgd_options, run_options
from evalkit.analyses import AnalysisInputs, register_analysis, single_eps
from evalkit.errors import EvalkitError


def _layer_names(layer: str | list[str] | None, layers: str | list[str] | None) -> Any:
    """The one layer list from ``layer`` (the CLI's ``--layer``) or ``layers``; None: default."""
    if layer is not None and layers is not None:
        raise EvalkitError("give the layers once: layer= (--layer) or layers=, not both")
    chosen = layer if layer is not None else layers
    if isinstance(chosen, str):
        names = [p.strip() for p in chosen.split(",") if p.strip()]
        if not names:
            raise EvalkitError("layer is empty (give names such as layer3,layer4)")
        return names
    if chosen is not None and (
        not isinstance(chosen, (list, tuple)) or not all(isinstance(n, str) for n in chosen)
    ):
        raise EvalkitError("layers must be module names, e.g. 'layer3,layer4' or a list of them")
    return list(chosen) if chosen is not None else None


@register_analysis(
    "distributions",
    description="activation-value and per-channel-mean distributions at any layers, natural vs "
    "PGD (ECDF/violin plots, log scale near zero, tables)",
)
def distributions(
    inputs: AnalysisInputs,
    *,
    layer: str | list[str] | None = None,
    layers: str | list[str] | None = None,
    steps: int = 20,
    step_size: float | str | None = None,
    max_values: int = 20000,
) -> Any:
    """Activation distributions of every model at ``layer`` (one name or a comma-separated list,
    e.g. ``layer3,layer4``; ``layers`` is the same option under its plural name; default: the
    two layers of :func:`analysis.distributions.default_layers`), natural vs PGD-``steps``
    adversarial images (Linf, eps from the call, default 8/255; step ``step_size``, default
    eps/4, random start; the joint loss for CAS/CIFS models). ``max_values``: activation values
    kept per (layer, kind) for quantiles and plots.

    Writes the study folder (tables ``distribution_summary`` and ``channel_means``, figures
    ``ecdf`` and ``violin``, ``analysis.json``) and returns the
    :class:`analysis.distributions.DistributionResult`.

    Raises:
        EvalkitError: non-positive ``steps``/``max_values``, a bad ``step_size``, an unknown
            layer, or layers given twice.
    """
    from analysis.distributions import run_distribution_study

    if isinstance(max_values, bool) or not isinstance(max_values, int) or max_values < 1:
        raise EvalkitError(f"max_values must be a positive integer (got {max_values!r})")
    return run_distribution_study(
        inputs.models,
        inputs.x,
        inputs.y,
        inputs.out,
        eps=single_eps(inputs.eps),
        layers=_layer_names(layer, layers),
        **pgd_options(steps, step_size, None),
        max_values=max_values,
        **run_options(inputs),
    )
