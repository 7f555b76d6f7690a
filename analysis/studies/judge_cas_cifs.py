"""The CAS / CIFS plugin claims, judged from harness runs (:class:`RunPoints`).

Rule: per base objective (AT, TRADES, MART) that was run, worst-case robust accuracy of
base+plugin minus base > 0, paired over test points (unpaired when only counts were recorded);
the pairs are combined. Pure functions: no file is read here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from analysis.studies.spec import Finding
from analysis.studies.stats import Interval, combine, verdict
from analysis.studies.values import RunPoints, compare, make_finding, numbers_dict, paper_value


def cas_cifs_findings(
    runs: Mapping[str, RunPoints],
    *,
    plugins: Sequence[str] = ("cas", "cifs"),
    bases: Sequence[str] = ("at", "trades", "mart"),
    paper_effects: Mapping[str, float | None] | None = None,
    seed: int = 0,
) -> list[Finding]:
    """One finding per plugin: does ``base_plugin`` beat ``base`` on worst-case robust accuracy,
    for every base in ``runs`` that has the plugin run too (``runs`` keyed ``at``, ``at_cas``...)."""
    out = []
    for plugin in plugins:
        pairs = [(b, f"{b}_{plugin}") for b in bases if b in runs and f"{b}_{plugin}" in runs]
        ivs: dict[str, Interval] = {}
        verdicts = []
        parts = []
        effects = []
        paper = paper_value(paper_effects, f"cas_cifs.{plugin}")
        for base, key in pairs:
            eff = compare(runs[key].worst, runs[base].worst, seed=seed)
            v = verdict(eff, direction=+1, paper_effect=paper)
            verdicts.append(v)
            parts.append(f"{base}: {v}")
            ivs[f"{base}_clean"] = runs[base].clean.interval()
            ivs[f"{key}_clean"] = runs[key].clean.interval()
            ivs[f"{base}_worst_case"] = runs[base].worst.interval()
            ivs[f"{key}_worst_case"] = runs[key].worst.interval()
            ivs[f"{key}_minus_{base}_worst_case"] = eff
            effects.append(eff)
        out.append(
            make_finding(
                f"{plugin.upper()} improves robust accuracy over its base objective under adaptive attacks",
                combine(verdicts),
                numbers_dict(ivs),
                "effect = worst-case robust accuracy (over the protocol's attacks, adaptive joint "
                "loss for the heads) of base+plugin minus base, paired over test points; per "
                f"pair: {', '.join(parts) or 'no pair was run'}; reproduced when every pair is",
                effect=effects[0] if len(effects) == 1 else None,
            )
        )
    return out


__all__ = ["cas_cifs_findings"]
