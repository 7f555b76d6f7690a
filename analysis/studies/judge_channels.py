"""The CAS channel claims, judged from per-image channel means (:class:`Features`).

Claims and rules (effect, direction, guard):

* magnitude: ratio adversarial/natural mean channel magnitude (standard model) - 1 > 0.
* uniformity: cross-fitted ``tail_share`` > 0 (standard model), guard: over 98% of channels
  active on average on natural and adversarial images (every activation-count measure is flat).
* AT closes (narrows) the magnitude gap: ``log r_std - |log r_AT|`` > 0, guard: the standard
  model's gap is not itself reproduced.
* AT keeps the uniformity gap: ``tail_share`` (AT) > 0, saturation guard.
* CAS less uniform than AT: entropy(AT) - entropy(AT+CAS) > 0 for adversarial and for natural
  counts (combined), guard: either model saturated (a saturated model's entropy is pinned near
  1, which alone would decide the sign).

Channel statistics are bootstrapped over images, jointly for all models (the channel study feeds
every model the same images); several seeds are combined with
:func:`analysis.studies.stats.across_seeds`. Pure functions: no file is read here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from analysis.channels import tail_share, tail_share_crossfit
from analysis.studies.spec import Finding
from analysis.studies.stats import REPRODUCED, Interval, combine, guard, verdict
from analysis.studies.values import (
    Features,
    PaperEffects,
    make_finding,
    numbers_dict,
    paper_value,
    round4,
    seeded,
    size_note,
)
from evalkit.errors import EvalkitError

# when more than this share of channels is "activated" on every image (natural and adversarial),
# the count distribution is flat by construction and no count measure can tell the two apart
SATURATED_ACTIVE_FRACTION = 0.98


def _norm_entropy(counts: np.ndarray) -> np.ndarray:
    """Row-wise normalised entropy of (m, C) counts (0 log 0 = 0); NaN for an all-zero row."""
    total = counts.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = counts / total
        h = -np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0).sum(1)
    return np.where(total[:, 0] > 0, h / np.log(counts.shape[1]), np.nan)


def _active_fraction(a: np.ndarray) -> float:
    return float(a.mean())


def _mean_of(x: np.ndarray) -> Any:
    return lambda w: (w @ x) / w.sum(1)


@dataclass
class _ChannelStats:
    """Every model's per-seed activation indicators (``act``) and per-image mean magnitudes
    (``mag``), natural then adversarial, with the bootstrap settings: one place for the
    quantities the five claims share, so each claim is a plain function of them."""

    act: dict[str, list[tuple[np.ndarray, np.ndarray]]]
    mag: dict[str, list[tuple[np.ndarray, np.ndarray]]]
    seeds: list[int]
    n: int
    frac: float
    seed: int

    @classmethod
    def of(
        cls,
        features: Mapping[str, Sequence[Features]],
        labels: Sequence[str],
        *,
        threshold: float,
        frac: float,
        seed: int,
    ) -> _ChannelStats:
        k, n = _check_inputs(features, labels)
        act = {lab: [f.active(threshold) for f in features[lab]] for lab in labels}
        mag = {
            lab: [(f.nat.mean(1), f.adv.mean(1)) for f in features[lab]] for lab in labels
        }  # per-image mean over channels
        return cls(act, mag, list(range(k)), n, frac, seed)

    def _seeded(self, stat_for: Any, method: str) -> Interval:
        return seeded(stat_for, self.seeds, self.n, method, self.seed)

    def ratio_of(self, lab: str, s: int) -> Any:
        m_nat, m_adv = self.mag[lab][s]
        return lambda w: (w @ m_adv) / (w @ m_nat)

    def ratio(self, lab: str) -> Interval:
        return self._seeded(lambda s: self.ratio_of(lab, s), "bootstrap over images")

    def magnitude(self, lab: str, which: int) -> Interval:
        return self._seeded(lambda s: _mean_of(self.mag[lab][s][which]), "bootstrap")

    def tail(self, lab: str) -> Interval:
        def stat_for(s: int) -> Any:
            a_nat, a_adv = self.act[lab][s]
            return lambda w: tail_share_crossfit(a_nat, a_adv, frac=self.frac, weights=w)

        return self._seeded(stat_for, "cross-fitted, bootstrap over images")

    def entropy(self, lab: str, which: int) -> Interval:
        return self._seeded(
            lambda s: lambda w: _norm_entropy(w @ self.act[lab][s][which]),
            "bootstrap over images",
        )

    def entropy_gap(self, lab_a: str, lab_b: str, which: int) -> Interval:
        """entropy(lab_a) - entropy(lab_b), paired over images."""
        return self._seeded(
            lambda s: (
                lambda w: (
                    _norm_entropy(w @ self.act[lab_a][s][which])
                    - _norm_entropy(w @ self.act[lab_b][s][which])
                )
            ),
            "paired bootstrap over images",
        )

    def closes(self, std_l: str, at_l: str) -> Interval:
        """log(ratio std) - |log(ratio AT)|, paired over images."""

        def closes_for(s: int) -> Any:
            sn, sa = self.mag[std_l][s]
            an, aa = self.mag[at_l][s]

            def stat(w: np.ndarray) -> np.ndarray:
                with np.errstate(invalid="ignore", divide="ignore"):
                    g_std = np.log((w @ sa) / (w @ sn))
                    g_at = np.log((w @ aa) / (w @ an))
                return g_std - np.abs(g_at)

            return stat

        return self._seeded(closes_for, "paired bootstrap over images")

    def saturated(self, lab: str) -> bool:
        fr = [min(_active_fraction(a_n), _active_fraction(a_a)) for a_n, a_a in self.act[lab]]
        return float(np.mean(fr)) > SATURATED_ACTIVE_FRACTION

    def active_frac(self, lab: str, which: int) -> float:
        return round4(np.mean([_active_fraction(a[which]) for a in self.act[lab]]))

    def in_sample(self, lab: str) -> dict[str, float]:
        from analysis.channels import spearman

        ts, rho = [], []
        for a_nat, a_adv in self.act[lab]:
            cn, ca = a_nat.sum(0), a_adv.sum(0)
            ts.append(tail_share(cn, ca, self.frac))
            rho.append(spearman(cn, ca))
        return {
            f"{lab}_tail_share_in_sample": round4(np.mean(ts)),
            f"{lab}_spearman_counts": round4(np.nanmean(rho)) if np.isfinite(rho).any() else None,
        }


def _check_inputs(
    features: Mapping[str, Sequence[Features]], labels: Sequence[str]
) -> tuple[int, int]:
    """(seeds, images), after checking every model has features on the same seeds and images."""
    std_l = labels[0]
    for lab in labels:
        if not features.get(lab):
            raise EvalkitError(
                f"channel judge needs features of model {lab!r}; run the channels study"
            )
    k = len(features[std_l])
    if any(len(features[lab]) != k for lab in labels):
        raise EvalkitError("channel judge needs the same number of seeds for every model")
    n = len(features[std_l][0].nat)
    if any(len(f.nat) != n for lab in labels for f in features[lab]):
        raise EvalkitError("channel judge needs the same images for every model (same N)")
    return k, n


def _magnitude_finding(
    st: _ChannelStats, std_l: str, paper_effects: PaperEffects
) -> tuple[Finding, Interval, str]:
    """Claim 1, the magnitude gap on the standard model; also returns its ratio and verdict,
    which claim 3 reuses."""
    r_std = st.ratio(std_l)
    eff1 = r_std.shift(-1.0)
    p1 = paper_value(paper_effects, "channels.magnitude")
    v1 = verdict(eff1, direction=+1, paper_effect=p1)
    found = make_finding(
        "adversarial examples activate channels with higher magnitude than natural ones (standard model)",
        v1,
        numbers_dict(
            {
                f"{std_l}_mean_magnitude_natural": st.magnitude(std_l, 0),
                f"{std_l}_mean_magnitude_adversarial": st.magnitude(std_l, 1),
                f"{std_l}_ratio_adv_over_nat": r_std,
            }
        ),
        "effect = adversarial/natural mean channel magnitude - 1 on the same images; "
        "reproduced when its interval lies above 0" + size_note(eff1, p1, v1),
        effect=eff1,
    )
    return found, r_std, v1


def _uniformity_finding(
    st: _ChannelStats, lab: str, claim: str, paper_key: str, note: str, paper_effects: PaperEffects
) -> tuple[Finding, bool]:
    """Claims 2 and 4: ``lab``'s adversarial activations spread onto the natural tail
    (cross-fitted tail share > 0, guarded by saturation); also returns the saturation."""
    ts = st.tail(lab)
    p = paper_value(paper_effects, paper_key)
    sat = st.saturated(lab)
    v = guard(verdict(ts, direction=+1, paper_effect=p), sat)
    found = make_finding(
        claim,
        v,
        numbers_dict(
            {
                f"{lab}_tail_share": ts,
                f"{lab}_entropy_natural": st.entropy(lab, 0),
                f"{lab}_entropy_adversarial": st.entropy(lab, 1),
            },
            **{
                f"{lab}_active_fraction_natural": st.active_frac(lab, 0),
                f"{lab}_active_fraction_adversarial": st.active_frac(lab, 1),
                f"{lab}_saturated": sat,
            },
            **st.in_sample(lab),
        ),
        note + size_note(ts, p, v),
        effect=ts,
    )
    return found, sat


def _closes_finding(
    st: _ChannelStats,
    std_l: str,
    at_l: str,
    r_std: Interval,
    v1: str,
    paper_effects: PaperEffects,
) -> Finding:
    """Claim 3: AT closes the magnitude gap (guarded by claim 1's verdict ``v1``)."""
    closes = st.closes(std_l, at_l)
    p3 = paper_value(paper_effects, "channels.at_closes_magnitude")
    v3 = guard(verdict(closes, direction=+1, paper_effect=p3), v1 != REPRODUCED)
    return make_finding(
        "adversarial training closes the magnitude gap",
        v3,
        numbers_dict(
            {
                "gap_closed_log": closes,
                f"{std_l}_ratio_adv_over_nat": r_std,
                f"{at_l}_ratio_adv_over_nat": st.ratio(at_l),
                f"{at_l}_mean_magnitude_adversarial": st.magnitude(at_l, 1),
            }
        ),
        "effect = log(ratio standard) - |log(ratio AT)|, > 0 when AT's adversarial/natural "
        "magnitude gap is smaller than the standard model's; inconclusive when the standard "
        "model's gap is not itself reproduced" + size_note(closes, p3, v3),
        effect=closes,
    )


def _cas_finding(
    st: _ChannelStats, at_l: str, cas_l: str, sat_at: bool, paper_effects: PaperEffects
) -> Finding:
    """Claim 5: CAS less uniform than AT (``sat_at``: AT's saturation, from claim 4)."""
    gap_adv = st.entropy_gap(at_l, cas_l, 1)
    gap_nat = st.entropy_gap(at_l, cas_l, 0)
    p5 = paper_value(paper_effects, "channels.cas_less_uniform")
    # either model saturated pins its entropy near 1 and fixes the sign of the gap: no verdict
    sat_either = sat_at or st.saturated(cas_l)
    v5 = guard(
        combine(
            [
                verdict(gap_adv, direction=+1, paper_effect=p5),
                verdict(gap_nat, direction=+1, paper_effect=p5),
            ]
        ),
        sat_either,
    )
    return make_finding(
        "CAS makes channel activation less uniform than plain AT",
        v5,
        numbers_dict(
            {
                "entropy_at_minus_cas_adversarial": gap_adv,
                "entropy_at_minus_cas_natural": gap_nat,
                f"{at_l}_entropy_adversarial": st.entropy(at_l, 1),
                f"{cas_l}_entropy_adversarial": st.entropy(cas_l, 1),
            },
            **{
                f"{cas_l}_active_fraction_natural": st.active_frac(cas_l, 0),
                f"{cas_l}_active_fraction_adversarial": st.active_frac(cas_l, 1),
                "either_saturated": sat_either,
            },
        ),
        "effect = normalised entropy of activation counts, AT minus AT+CAS (> 0: CAS less "
        "uniform), on adversarial and on natural images, paired over images; reproduced when "
        "both are, partly when one is and the other is not reproduced; inconclusive when "
        "either model is saturated (its entropy is pinned near 1)",
        effect=gap_adv,
    )


def channels_findings(
    features: Mapping[str, Sequence[Features]],
    *,
    threshold: float = 0.01,
    frac: float = 0.5,
    labels: tuple[str, str, str] = ("std", "at", "at_cas"),
    paper_effects: PaperEffects = None,
    seed: int = 0,
) -> list[Finding]:
    """The five CAS channel claims from per-image features.

    ``features[label]``: one :class:`Features` per training seed; ``labels`` name the standard,
    AT and AT+CAS models. All models' features must hold the same N images (the channel study
    uses one image set for all), which makes cross-model comparisons paired over images.
    """
    std_l, at_l, cas_l = labels
    st = _ChannelStats.of(features, labels, threshold=threshold, frac=frac, seed=seed)
    magnitude, r_std, v1 = _magnitude_finding(st, std_l, paper_effects)
    uniformity, _ = _uniformity_finding(
        st,
        std_l,
        "adversarial examples activate channels more uniformly than natural ones (standard model)",
        "channels.uniformity",
        "tail_share = share of adversarial activations on the channels natural images use "
        f"least (the tail {frac:.0%} of the natural ranking) minus the natural share, ranked "
        "and measured on different halves of the images; reproduced when its interval lies "
        f"above 0; inconclusive whatever it shows when over {SATURATED_ACTIVE_FRACTION:.0%} "
        "of channels are active (saturated). Entropy and Spearman are shown, not judged",
        paper_effects,
    )
    closes = _closes_finding(st, std_l, at_l, r_std, v1, paper_effects)
    keeps, sat_at = _uniformity_finding(
        st,
        at_l,
        "adversarial training does not remove the uniformity gap",
        "channels.at_keeps_uniformity",
        "AT model: cross-fitted tail_share > 0 means adversarial activations still spread onto "
        "the natural tail; same saturation guard as the standard model",
        paper_effects,
    )
    cas = _cas_finding(st, at_l, cas_l, sat_at, paper_effects)
    return [magnitude, uniformity, closes, keeps, cas]


__all__ = ["SATURATED_ACTIVE_FRACTION", "channels_findings"]
