"""File-name slugs of model labels: the studies write ``features_<slug>.npz``,
``points_<slug>.npz`` and the like, and the judges read them back by the same slug."""

from __future__ import annotations


def file_slug(label: str) -> str:
    """``label`` with every character other than a letter, digit, ``-`` or ``_`` replaced by
    ``_`` (``"at+cas 2"`` -> ``"at_cas_2"``), safe in a file name on every platform."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in label)


__all__ = ["file_slug"]
