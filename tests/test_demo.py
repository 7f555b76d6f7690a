"""``evalkit demo --fast`` runs the whole offline pipeline (train three models, attack them with
the harness, channel and activation-distribution analyses, report) and says where the report
is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import one_thread
from test_report_fixtures import tables

from evalkit.cli import main as cli_main


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo") / "out"
    capture = pytest.MonkeyPatch()
    import io
    import sys

    buf = io.StringIO()
    capture.setattr(sys, "stdout", buf)
    try:
        with one_thread():
            rc = cli_main(["demo", "--fast", "--out", str(out), "--device", "cpu"])
    finally:
        capture.undo()
    assert rc == 0
    return out, buf.getvalue()


def test_demo_writes_the_report_and_prints_where(demo: tuple[Path, str]) -> None:
    out, stdout = demo
    report = out / "report.html"
    assert report.is_file()
    assert f"report: {report.resolve()}" in stdout
    for name in ("standard", "pgd-at", "at-cas"):
        assert (out / "models" / name / "checkpoint.pt").is_file()
        summary = json.loads((out / "runs" / name / "summary.json").read_text())
        assert summary["protocol"]["preset"] == "fast"
        assert f"{name:<9} clean {100 * summary['clean_accuracy']:5.1f}%" in stdout
    assert (out / "analysis" / "channels" / "analysis.json").is_file()
    assert (out / "analysis" / "distributions" / "analysis.json").is_file()


def test_demo_report_content(demo: tuple[Path, str]) -> None:
    out, _ = demo
    html = (out / "report.html").read_text()
    assert len(tables(html, "robust-table")) == 3
    assert 'id="leaderboard"' in html and 'id="analysis"' in html
    assert 'preset <span class="badge">fast</span>' in html  # the report says which preset
    defenses = [
        json.loads((out / "runs" / n / "summary.json").read_text())["model"]["defense"]
        for n in ("standard", "pgd-at", "at-cas")
    ]
    assert defenses == ["standard", "at", "at+cas"]
    assert "data:image/png;base64," in html.split('id="analysis"', 1)[1]  # channel plots embedded


def test_demo_writes_html_and_pdf_with_intervals_at_four_eps(demo: tuple[Path, str]) -> None:
    """The quickstart's promise: report.html and report.pdf, every robust accuracy with its 95%
    interval, and accuracy-vs-eps curves over at least four eps."""
    from reports.pdf import pdf_available

    out, stdout = demo
    if pdf_available() is None:
        assert (out / "report.pdf").read_bytes()[:5] == b"%PDF-"
        assert f"PDF:    {(out / 'report.pdf').resolve()}" in stdout
    html = (out / "report.html").read_text()
    for name in ("standard", "pgd-at", "at-cas"):
        s = json.loads((out / "runs" / name / "summary.json").read_text())
        assert len(s["worst_case"]) >= 4
        for w in s["worst_case"]:
            low, high = w["robust_accuracy_ci"]
            assert low <= w["robust_accuracy"] <= high
            assert f"{100 * w['robust_accuracy']:.2f} [{100 * low:.1f}, {100 * high:.1f}]" in html
        head = s["worst_case"][0]
        lo, hi = head["robust_accuracy_ci"]
        assert f"{100 * head['robust_accuracy']:5.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]" in stdout


def test_demo_refuses_a_foreign_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    assert cli_main(["demo", "--fast", "--out", str(tmp_path)]) == 2
    assert "pick a new or empty folder" in capsys.readouterr().err
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_demo_report_shows_activation_distributions(demo: tuple[Path, str]) -> None:
    """Natural vs adversarial activation distributions for each of the three models at two or
    more layers: the study's figures are embedded byte for byte and its summary table holds a
    row per model, layer, input kind and statistic, equal to the CSV the study wrote."""
    import base64

    import pandas as pd

    out, _ = demo
    folder = out / "analysis" / "distributions"
    doc = json.loads((folder / "analysis.json").read_text())
    assert doc["study"] == "distributions"
    models = ("standard", "pgd-at", "at-cas")
    layers = doc["params"]["layers"]
    assert set(layers) == set(models)
    assert all(len(layers[m]) >= 2 for m in models)
    html = (out / "report.html").read_text()
    start = html.index('id="analysis-distributions"')
    block = html[start : html.index("</section>", start)]
    figures = {f["name"]: f for f in doc["files"]["figures"]}
    assert {"ecdf", "violin"} <= set(figures)
    for name in ("ecdf", "violin"):
        png = base64.b64encode((folder / figures[name]["png"]).read_bytes()).decode()
        assert png in block, f"{name} plot not embedded in the distributions section"
        assert figures[name]["caption"] in block
    for m in models:
        assert f"<strong>{m}</strong>: {', '.join(layers[m])}" in block
    (summary,) = tables(block, "table-distribution_summary")
    csv = pd.read_csv(folder / "distribution_summary.csv")
    assert summary[1] == list(csv.columns)
    shown = {tuple(r[:4]) for r in summary[2:]}
    for m in models:
        for layer in layers[m]:
            for kind in ("natural", "adversarial"):
                for stat in ("activation", "channel_mean"):
                    assert (m, layer, kind, stat) in shown
    assert [r[6] for r in summary[2:]] == [f"{v:.4g}" for v in csv["mean"]]
