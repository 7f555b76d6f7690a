"""PDF from the report's HTML with WeasyPrint, with errors that say what to install.

WeasyPrint needs Pango (a system library) at import time; on a machine without it the import
raises ``OSError: cannot load library 'libpango-1.0-0'``. That is a setup problem the user can
fix, so it becomes an :class:`EvalkitError` naming the Debian package to install.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from evalkit.errors import EvalkitError
from evalkit.utils.io import atomic_write_bytes

DEBIAN_PACKAGES = {
    "pango": "libpango-1.0-0 libpangoft2-1.0-0",
    "gobject": "libglib2.0-0",
    "harfbuzz": "libharfbuzz0b libharfbuzz-subset0",
    "fontconfig": "libfontconfig1",
    "cairo": "libcairo2",
}


def _import_weasyprint():
    try:
        import weasyprint
    except ImportError:
        raise EvalkitError(
            "PDF output needs WeasyPrint: pip install 'evalkit[pdf]' (or pip install weasyprint)"
        ) from None
    except OSError as exc:  # a system library is missing
        match = re.search(r"library ['\"]?([\w.\-]+)", str(exc))
        lib = match.group(1) if match else str(exc)
        pkg = next(
            (p for key, p in DEBIAN_PACKAGES.items() if key in lib.lower()),
            "libpango-1.0-0 libpangoft2-1.0-0",
        )
        raise EvalkitError(
            f"WeasyPrint cannot load the system library {lib} (install it: apt-get install {pkg})"
        ) from None
    return weasyprint


def pdf_available() -> str | None:
    """None when PDFs can be written, else the reason (the error message)."""
    try:
        _import_weasyprint()
    except EvalkitError as exc:
        return str(exc)
    return None


def html_to_pdf(html: str, out: str | Path) -> Path:
    """Write ``html`` as a PDF to ``out`` (atomically) and return the path."""
    weasyprint = _import_weasyprint()
    out = Path(out)
    buf = io.BytesIO()
    # no base_url: the report references nothing outside itself
    weasyprint.HTML(string=html).write_pdf(buf)
    atomic_write_bytes(out, buf.getvalue())
    return out
