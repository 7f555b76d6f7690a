"""The report renders: headless Chromium opens the HTML without console errors and paints a
non-blank page; WeasyPrint's PDF renders page by page with pdftoppm, loses no table column
(pdftotext finds the last column header of every table), has no near-empty page and draws
every eps a run has. The runs include a schema-2 Monte-Carlo run (with the wide attack-details
table), a four-eps run and two schema-1 fixtures. Skipped, with the reason, where Chromium,
pdftoppm/pdftotext or WeasyPrint are absent (CI installs Debian's chromium and poppler-utils)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from helpers import one_thread
from test_report_fixtures import (
    chromium_binary,
    console_errors,
    make_analysis_dir,
    make_run_dir,
    make_summary,
    png_variance,
    run_chromium,
)

from reports import build_report


def monte_carlo_run(out: Path) -> Path:
    """A schema-2 run directory from ``evalkit.evaluate``: a randomized model (logit noise),
    scored by Monte Carlo, with the scoring, worst-case, broken-by and cost blocks filled."""
    import torch

    from evalkit.data import load_split
    from evalkit.evaluation import evaluate

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))

    class Noisy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = self.net(x)
            return logits + 0.1 * torch.randn_like(logits)

    split = load_split("fashion-mnist-mini", "test").first(16)
    with one_thread():
        evaluate(
            Noisy(),
            (split.float_batch(slice(None)), split.y),
            preset="fast",
            attacks=["fgsm", "pgd"],
            mc_draws=4,
            eot=2,
            out=out,
            device="cpu",
            progress=False,
            echo=False,
        )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scoring"]["semantics"] == "monte-carlo"
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("render")
    flag = {"id": "gradient_masking", "severity": "warning", "message": "PGD is weaker than FGSM"}
    runs = [
        make_run_dir(root / "a", make_summary(flags=[flag])),
        make_run_dir(root / "b", make_summary(name="at", clean=0.7, pgd=0.5)),
        make_run_dir(
            root / "sweep", make_summary(name="sweep", eps=("2/255", "4/255", "6/255", "8/255"))
        ),
        monte_carlo_run(root / "mc"),
    ]
    analysis = make_analysis_dir(root / "analysis")
    pdf = None
    try:
        import weasyprint  # noqa: F401

        pdf = root / "report.pdf"
    except (ImportError, OSError) as exc:
        print(f"no PDF in this test run: WeasyPrint unavailable ({exc})")
    return build_report(runs, root / "report.html", analysis_dirs=[analysis], pdf=pdf)


def test_html_opens_in_chromium_without_console_errors(
    report: dict[str, Path], tmp_path: Path
) -> None:
    if chromium_binary() is None:
        pytest.skip("chromium not installed (apt-get install chromium); CI installs it")
    shot = tmp_path / "shot.png"
    proc = run_chromium(report["html"], tmp_path, screenshot=shot)
    assert shot.exists(), proc.stderr[-2000:]
    assert console_errors(proc.stderr) == []
    assert png_variance(shot) > 1e-3, "the screenshot is blank"


def test_pdf_pages_render_with_pdftoppm(report: dict[str, Path], tmp_path: Path) -> None:
    if "pdf" not in report:
        pytest.skip("WeasyPrint unavailable, so no PDF was written")
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm not installed (apt-get install poppler-utils); CI installs it")
    assert report["pdf"].stat().st_size > 1000
    subprocess.run(
        ["pdftoppm", "-r", "30", "-png", str(report["pdf"]), str(tmp_path / "page")],
        check=True,
        capture_output=True,
        timeout=120,
    )
    pages = sorted(tmp_path.glob("page-*.png"))
    assert len(pages) >= 3  # leaderboard + three runs + analysis do not fit on one A4 page
    assert png_variance(pages[0]) > 1e-3, "the first PDF page is blank"


class _LastHeaders(HTMLParser):
    """The last column header of every whole table (printed parts excluded): the last cell of
    its last ``<thead>`` row, or of its first row when it has no ``<thead>`` and that row is
    headers."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str]] = []
        self._tables: list[dict] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "table":
            part = "table-part" in (a.get("class") or "").split()
            self._tables.append(
                {
                    "css": a.get("class") or a.get("id") or "",
                    "part": part,
                    "thead": False,
                    "rows": [],
                    "in_thead": False,
                }
            )
        elif not self._tables:
            return
        elif tag == "thead":
            self._tables[-1]["in_thead"] = self._tables[-1]["thead"] = True
        elif tag == "tr":
            self._tables[-1]["rows"].append({"thead": self._tables[-1]["in_thead"], "cells": []})
        elif tag in ("th", "td"):
            self._cell = [tag]

    def handle_endtag(self, tag: str) -> None:
        if not self._tables:
            return
        t = self._tables[-1]
        if tag == "thead":
            t["in_thead"] = False
        elif tag in ("th", "td") and self._cell is not None and t["rows"]:
            t["rows"][-1]["cells"].append(
                (self._cell[0], " ".join("".join(self._cell[1:]).split()))
            )
            self._cell = None
        elif tag == "table":
            self._tables.pop()
            if t["part"] or not t["rows"]:
                return
            head = [r for r in t["rows"] if r["thead"]]
            row = head[-1] if head else t["rows"][0]
            if row["cells"] and all(kind == "th" for kind, _ in row["cells"]):
                self.found.append((t["css"], row["cells"][-1][1]))

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _pdf_text(pdf: Path) -> str:
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext not installed (apt-get install poppler-utils); CI installs it")
    proc = subprocess.run(
        ["pdftotext", "-raw", str(pdf), "-"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.stdout


def test_pdf_keeps_the_last_column_of_every_table(report: dict[str, Path]) -> None:
    """Wide tables (attack details, protocol plans, leaderboard, analysis tables) are split into
    parts or rotated for print, never clipped: the last header of every table is in the PDF."""
    if "pdf" not in report:
        pytest.skip("WeasyPrint unavailable, so no PDF was written")
    parser = _LastHeaders()
    parser.feed(report["html"].read_text(encoding="utf-8"))
    assert len(parser.found) >= 15, parser.found
    assert any("details-table" in css for css, _ in parser.found)
    text = re.sub(r"\s+", "", _pdf_text(report["pdf"]))
    missing = [(css, h) for css, h in parser.found if re.sub(r"\s+", "", h) not in text]
    assert missing == []


def test_pdf_has_no_near_empty_page(report: dict[str, Path], tmp_path: Path) -> None:
    """Every page but the last is at least a third full (the lowest painted row, at 30 dpi)."""
    if "pdf" not in report:
        pytest.skip("WeasyPrint unavailable, so no PDF was written")
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm not installed (apt-get install poppler-utils); CI installs it")
    from PIL import Image, ImageOps

    subprocess.run(
        ["pdftoppm", "-r", "30", "-gray", "-png", str(report["pdf"]), str(tmp_path / "p")],
        check=True,
        capture_output=True,
        timeout=120,
    )
    pages = sorted(tmp_path.glob("p-*.png"))
    fill = []
    for page in pages[:-1]:
        with Image.open(page) as im:
            ink = ImageOps.invert(im.convert("L")).point(lambda v: 255 if v > 12 else 0)
            box = ink.getbbox()
            fill.append(0.0 if box is None else box[3] / im.size[1])
    assert fill and min(fill) > 1 / 3, [f"{f:.2f}" for f in fill]


def test_the_eps_plot_draws_every_eps_with_error_bars(tmp_path: Path) -> None:
    """The accuracy-vs-eps curve has a point at every eps of the run (4 here) plus clean at 0,
    each with its 95% interval around the estimate, and takes an extra series to overlay."""
    import torch

    from evalkit.data import load_split
    from evalkit.evaluation import evaluate
    from reports.curves import Series, accuracy_vs_eps, run_series, worst_series
    from reports.runs import load_run

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    split = load_split("fashion-mnist-mini", "test").first(32)
    eps = ["2/255", "4/255", "6/255", "8/255"]
    with one_thread():
        evaluate(
            net,
            (split.x, split.y),
            eps=eps,
            attacks=["fgsm"],
            sanity=False,
            out=tmp_path / "run",
            device="cpu",
            progress=False,
            echo=False,
        )
    run = load_run(tmp_path / "run")
    worst = worst_series(run)
    assert [p[0] for p in worst.points][1:] == sorted(v / 255 for v in (2, 4, 6, 8))
    assert worst.points[0][0] == 0.0 and worst.points[0][1] == run.clean_accuracy
    assert all(lo is not None and lo <= acc <= hi for _, acc, lo, hi in worst.points)
    series = run_series(run)
    assert [s.label for s in series] == ["fgsm", "worst case"]
    extra = Series("another curve", [(0.02, 0.5, 0.4, 0.6)], {"color": "purple"})
    assert accuracy_vs_eps([*series, extra]).startswith("data:image/png;base64,")
