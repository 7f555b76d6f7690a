"""The report renders: headless Chromium opens the HTML without console errors and paints a
non-blank page; WeasyPrint's PDF renders page by page with pdftoppm. The runs include a
schema-2 Monte-Carlo run and two schema-1 fixtures. Skipped, with the reason,
where Chromium, pdftoppm or WeasyPrint are absent (CI installs Debian's chromium and poppler-utils)."""

from __future__ import annotations

import json
import shutil
import subprocess
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
