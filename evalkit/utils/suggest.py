""" "Did you mean ...?" for every name and number a user types: one helper, used by the attack,
preset, analysis and eps parsers so the hints read the same everywhere.

* :func:`did_you_mean` — the closest known names (``difflib`` similarity, Python's own
  ``get_close_matches``: Ratcliff/Obershelp matching, cutoff 0.6), case-insensitive;
* :func:`eps_hint` — an Linf eps written in 0-255 pixel units (``8`` for ``8/255``), the most
  common eps mistake.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def close_matches(word: str, choices: Iterable[str], n: int = 2, cutoff: float = 0.6) -> list[str]:
    """Up to ``n`` of ``choices`` most similar to ``word`` (case-insensitive), best first."""
    options = {str(c).lower(): str(c) for c in choices}
    hits = difflib.get_close_matches(str(word).strip().lower(), list(options), n=n, cutoff=cutoff)
    return [options[h] for h in hits]


def did_you_mean(word: str, choices: Iterable[str], n: int = 2) -> str:
    """``"did you mean 'pgd'?"`` (or two names joined by "or"), or ``""`` when nothing is close."""
    hits = close_matches(word, choices, n=n)
    if not hits:
        return ""
    return "did you mean " + " or ".join(repr(h) for h in hits) + "?"


def eps_hint(value: float, norm: str = "linf") -> str:
    """``"did you mean 8/255?"`` for an Linf eps in (1, 255] (0-255 pixel units), else ``""``.

    A whole number prints as ``k/255``; another value as ``v/255`` with up to 4 digits."""
    if norm != "linf" or not (1 < value <= 255):
        return ""
    text = f"{int(value)}" if float(value).is_integer() else f"{value:.4g}"
    return f"did you mean {text}/255?"


def with_hint(message: str, hint: str) -> str:
    """``message`` with ``hint`` put in front of a trailing parenthesis, or appended in one:
    ``"unknown attack 'pgdd' (did you mean 'pgd'?; known: ...)"``."""
    if not hint:
        return message
    if message.endswith(")") and " (" in message:
        head, _, tail = message.rpartition(" (")
        return f"{head} ({hint}; {tail}"
    return f"{message} ({hint})"
