"""Registers :func:`analysis.channels.run_channel_study` as the ``channels`` analysis of
:func:`evalkit.analyze` (kept apart from ``analysis/channels.py`` so that module stays pure
statistics; moving this function there changes nothing for callers).
"""

from __future__ import annotations

from typing import Any

from analysis.common import PAPER_STEP_SIZE, PAPER_STEPS
from analysis.options import pgd_options, run_options
from evalkit.analyses import AnalysisInputs, register_analysis, single_eps
from evalkit.errors import EvalkitError


@register_analysis(
    "channels",
    description="per-channel activation magnitude and frequency, natural vs PGD (CAS Figures 1-2)",
)
def channels(
    inputs: AnalysisInputs,
    *,
    layer: str | None = None,
    steps: int = PAPER_STEPS,
    step_size: float | str | None = None,
    threshold: float = 0.01,
    sort: str = "independent",
    magnitude: str = "mean",
    **options: Any,
) -> dict[str, Any]:
    """Channel activation magnitude and uniformity at ``layer`` (default: the penultimate
    block), natural vs PGD-``steps`` images; ``step_size`` defaults to the CAS analysis's 0.003.
    ``sort`` and ``magnitude`` choose the plots (see ``evalkit analyze --help``); further
    options go to :func:`analysis.channels.run_channel_study`. Returns its per-model scalars."""
    from analysis.channels import run_channel_study

    if not 0 <= threshold < 1:
        raise EvalkitError(f"threshold must be in [0, 1) (the paper uses 0.01), not {threshold}")
    return run_channel_study(
        inputs.models,
        inputs.x,
        inputs.y,
        inputs.out,
        eps=single_eps(inputs.eps),
        layer=layer,
        class_k=inputs.class_k,
        threshold=threshold,
        sort=sort,
        magnitude=magnitude,
        **pgd_options(steps, step_size, PAPER_STEP_SIZE),
        **run_options(inputs),
        **options,
    )
