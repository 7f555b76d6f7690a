"""What a run cost, what it adapted, and which inputs it is bound to: the cost split, the
adaptive-attack record and the content fingerprints (summary.json schema 2,
docs/run-directory.md; older runs show :data:`reports.fmt.MISSING` where a key is absent).
"""

from __future__ import annotations

from typing import Any

from reports.fmt import MISSING, count, pct, pretty, seconds
from reports.runs import RunData, as_float

# (summary.json cost key, label): the parts of the propagation count, in the order they ran
COST_PARTS = (
    ("clean", "clean pass"),
    ("protocol", "protocol attacks"),
    ("sanity_probes", "sanity probes (scored; their breaks count in the worst case)"),
    ("sanity", "sanity checks, all (probes included), within the budget"),
)
SHORT_HASH = 12


def _cost(run: RunData) -> dict[str, Any]:
    cost = run.summary.get("cost")
    return cost if isinstance(cost, dict) else {}


def cost_totals(run: RunData) -> list[tuple[str, str]]:
    """The scalar totals of ``cost`` (propagations as counts, ``*_s`` keys as seconds)."""
    out = []
    for k, v in _cost(run).items():
        if isinstance(v, (dict, list)):
            continue
        f = as_float(v)
        if f is not None and k.endswith("_s"):
            out.append((k, seconds(f)))
        elif f is not None and float(f).is_integer():
            out.append((k, count(f)))
        else:
            out.append((k, pretty(v)))
    return out


def cost_parts(run: RunData) -> list[dict[str, str]]:
    """Forward/backward propagations and time of the clean pass, the protocol, the sanity
    probes and all sanity checks; empty when the run records no split (schema 1)."""
    cost = _cost(run)
    rows = []
    for key, label in COST_PARTS:
        part = cost.get(key)
        if not isinstance(part, dict):
            continue
        rows.append(
            {
                "part": key,
                "label": label,
                "forward": count(part.get("forward_passes")),
                "backward": count(part.get("backward_passes")),
                "time": seconds(part.get("time_s")),
            }
        )
    return rows


def sanity_budget(run: RunData) -> dict[str, Any] | None:
    """The sanity checks' spend against their limit: propagations, budget, share of the
    protocol's attack propagations and the limit share (25%); ``over`` when the share exceeds
    the limit, ``skipped`` when the checks did not run. None when not recorded."""
    sanity = _cost(run).get("sanity")
    if not isinstance(sanity, dict):
        return None
    share, limit = as_float(sanity.get("share_of_protocol")), as_float(sanity.get("limit_share"))
    return {
        "propagations": count(sanity.get("propagations")),
        "budget": count(sanity.get("budget")),
        "share": pct(share, 1),
        "limit": pct(limit, 0),
        "over": share is not None and limit is not None and share > limit + 1e-12,
        "skipped": bool(sanity.get("skipped")),
    }


def fingerprint_rows(run: RunData) -> list[dict[str, str]]:
    """``{key, short, full}`` per fingerprint: sha256 digests shortened to 12 hex digits (the
    full digest is kept for the tooltip), other values as text, missing ones as MISSING."""
    prints = run.summary.get("fingerprints")
    if not isinstance(prints, dict):
        prints = {
            k: v
            for k, v in run.config.items()
            if k.endswith("_sha256") or k in ("evalkit_version", "torch_version")
        }
    rows = []
    for key, value in prints.items():
        if value is None or value == "":
            rows.append({"key": str(key), "short": MISSING, "full": ""})
        elif isinstance(value, str) and key.endswith("sha256"):
            rows.append({"key": str(key), "short": value[:SHORT_HASH], "full": value})
        else:
            rows.append({"key": str(key), "short": pretty(value), "full": ""})
    return rows


ADAPTIVE_KEYS = ("name", "reason", "attacks", "left_out")


def _names(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) if value else MISSING
    return MISSING if value in (None, "") else pretty(value)


def adaptive_context(run: RunData) -> dict[str, Any]:
    """The adaptive additions: per entry its name, why, the attacks it changed or added, and
    what an explicit attack list left out; further keys as extra columns."""
    entries = [a for a in (run.summary.get("adaptive") or []) if isinstance(a, dict)]
    extra: list[str] = []
    for a in entries:
        extra.extend(k for k in a if k not in ADAPTIVE_KEYS and k not in extra)
    rows = [
        {
            "name": pretty(a.get("name", MISSING)),
            "reason": pretty(a.get("reason", MISSING)),
            "attacks": _names(a.get("attacks")),
            "left_out": _names(a.get("left_out")),
            "has_left_out": bool(a.get("left_out")),
            "extra": [pretty(a[k]) if k in a else MISSING for k in extra],
        }
        for a in entries
    ]
    other = [
        pretty(a) for a in (run.summary.get("adaptive") or []) if not isinstance(a, dict)
    ]  # foreign shapes
    return {
        "rows": rows,
        "extra_keys": extra,
        "text": other,
        "any_left_out": any(r["has_left_out"] for r in rows),
    }
