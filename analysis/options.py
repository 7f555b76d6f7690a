"""Keyword arguments that the registered analyses (``@register_analysis`` functions) pass on to
their study runners: the PGD step options, checked once here, and the run options every runner
takes from :class:`evalkit.analyses.AnalysisInputs`.
"""

from __future__ import annotations

from typing import Any

from evalkit.analyses import AnalysisInputs
from evalkit.errors import EvalkitError
from evalkit.utils.parse import parse_eps


def pgd_options(
    steps: Any, step_size: float | str | None, default_step: float | None
) -> dict[str, Any]:
    """``{"steps": ..., "step_size": ...}`` for a study's PGD attack.

    ``step_size``: a float or text such as ``"2/255"`` (pixel units in [0, 1]); None gives
    ``default_step`` (None there leaves the runner's own default, eps/4).

    Raises:
        EvalkitError: ``steps`` is not a positive integer, or ``step_size`` does not parse.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise EvalkitError(f"steps must be a positive integer (got {steps!r})")
    return {
        "steps": steps,
        "step_size": default_step if step_size is None else parse_eps(step_size),
    }


def run_options(inputs: AnalysisInputs) -> dict[str, Any]:
    """``batch_size``, ``seed``, ``device``, ``show_progress`` and ``extra_params`` (the data
    label, recorded in ``analysis.json``) from ``inputs``, as every study runner takes them."""
    return {
        "batch_size": inputs.batch_size,
        "seed": inputs.seed,
        "device": inputs.device,
        "show_progress": inputs.progress,
        "extra_params": {"data": inputs.data_label},
    }


__all__ = ["pgd_options", "run_options"]
