"""Report content: real run directories from the harness render into tables holding exactly the
numbers of their summary.json, flags are shown, inputs are embedded, and user mistakes give
one-line errors."""

from __future__ import annotations

import builtins
import html as htmllib
import json
import re
import sys
from pathlib import Path

import pytest
from test_report_fixtures import (
    make_analysis_dir,
    make_real_run,
    make_run_dir,
    make_summary,
    one_thread,
    pct,
    tables,
)

from evalkit.cli import main as cli_main
from evalkit.errors import EvalkitError


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two real run directories: a plain model and the same recipe with SAP (raises a flag)."""
    root = tmp_path_factory.mktemp("real")
    with one_thread():
        return [
            make_real_run(root, "plain"),
            make_real_run(root, "sap", defense="sap", folder="m2"),
        ]


@pytest.fixture(scope="module")
def real_report(real_runs: list[Path], tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("rep") / "report.html"
    assert cli_main(["report", *map(str, real_runs), "-o", str(out)]) == 0
    return out.read_text(encoding="utf-8")


PROBE_TAG = "sanity probe · counted in worst case"


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_robust_tables_hold_summary_numbers(real_runs: list[Path], real_report: str) -> None:
    robust_tables = tables(real_report, "robust-table")
    assert len(robust_tables) == len(real_runs)
    for run, rows in zip(real_runs, robust_tables):
        s = _summary(run)
        header, body = rows[0], {r[0].removesuffix(PROBE_TAG).strip(): r[1:] for r in rows[1:]}
        eps_cols = [h.removeprefix("eps ") for h in header[1:]]
        assert sorted(eps_cols) == sorted({r["eps"] for r in s["results"]})
        for r in s["results"]:
            assert body[r["attack"]][eps_cols.index(r["eps"])] == pct(r["robust_accuracy"])
        worst = next(v for k, v in body.items() if k.startswith("worst case"))
        for w in s["worst_case"]:
            assert worst[eps_cols.index(w["eps"])] == pct(w["robust_accuracy"])
        assert f"clean accuracy <strong>{pct(s['clean_accuracy'])}%" in real_report


def test_per_class_table_matches_summary(real_runs: list[Path], real_report: str) -> None:
    for run, rows in zip(real_runs, tables(real_report, "per-class-table")):
        s = _summary(run)
        last_eps = s["worst_case"][-1]["eps"]
        body = rows[1:]
        assert len(body) == len(s["per_class"])
        for row, entry in zip(body, s["per_class"]):
            assert row[0] == entry["name"]
            assert row[1] == str(entry["n"])
            assert row[2] == pct(entry["clean_accuracy"])
            assert row[3] == pct(entry["robust_accuracy"][last_eps])


def test_leaderboard_sorted_by_worst_case(real_runs: list[Path], real_report: str) -> None:
    board = tables_by_id(real_report)
    header, body = board[0], board[1:]
    col = header.index("worst @ 8/255")
    expected = sorted(
        (_summary(r) for r in real_runs), key=lambda s: -s["worst_case"][-1]["robust_accuracy"]
    )
    assert [row[col] for row in body] == [
        pct(s["worst_case"][-1]["robust_accuracy"]) for s in expected
    ]
    values = [float(row[col]) for row in body]
    assert values == sorted(values, reverse=True)


def tables_by_id(html: str) -> list[list[str]]:
    """The leaderboard table (found by id, since it carries no class)."""
    start = html.index('<table id="leaderboard-table">')
    end = html.index("</table>", start) + len("</table>")
    (rows,) = tables(html[start:end].replace('id="leaderboard-table"', 'class="lb"'), "lb")
    return rows


def test_flags_are_shown(real_runs: list[Path], real_report: str) -> None:
    text = htmllib.unescape(real_report)
    flags = [f for run in real_runs for f in _summary(run)["flags"]]
    assert flags, "the SAP run must raise at least the randomness flag"
    assert any(f["id"] == "randomness_detected" for f in flags)
    for f in flags:
        assert f["message"] in text
        assert f"({f['id']})" in text
    assert f"Sanity checks raised {len(flags)} flag" in text
    # the summary box sits before the first run section, so flags are seen first
    assert real_report.index('id="flags-summary"') < real_report.index('class="run"')


def test_protocol_cost_environment_and_model_card(real_runs: list[Path], real_report: str) -> None:
    text = htmllib.unescape(real_report)
    s = _summary(real_runs[0])
    assert "Protocol actually run" in text
    assert f"<strong>{s['protocol']['preset']}</strong>" in real_report
    for plan in s["protocol"]["attacks"]:
        assert plan["description"] in text
    assert f"{s['cost']['forward_passes']:,}" in text
    assert s["environment"]["torch"] in text
    assert s["model"]["path"] in text
    assert "Training history" in text  # the checkpoint's history was plotted
    assert "adaptive additions" in text  # the SAP run adds EOT


def test_report_is_self_contained(real_report: str) -> None:
    refs = re.findall(r'(?:src|href)="([^"]*)"', real_report)
    assert refs and all(r.startswith(("data:", "#")) for r in refs), refs
    assert "<script" not in real_report.lower()
    assert "http://" not in real_report and "https://" not in real_report
    assert "Content-Security-Policy" in real_report


def test_fixture_with_several_eps_and_missing_keys(tmp_path: Path) -> None:
    full = make_run_dir(tmp_path / "full", make_summary(eps=("2/255", "4/255", "8/255")))
    bare = make_run_dir(
        tmp_path / "bare",
        {
            "n_examples": 10,
            "clean_accuracy": 0.5,
            "results": [{"attack": "pgd-20", "eps": 0.0313725490, "robust_accuracy": 0.2}],
        },
    )
    out = tmp_path / "r.html"
    assert cli_main(["report", str(full), str(bare), "-o", str(out), "--title", "T"]) == 0
    html = out.read_text()
    rows = tables(html, "robust-table")
    assert rows[0][0] == ["attack", "eps 2/255", "eps 4/255", "eps 8/255"]
    # a run without worst_case gets it derived (minimum over attacks), marked by the same number
    assert rows[1][-1] == ["worst case (per example, all attacks)", "20.00"]
    assert "not recorded" in html  # cost/environment missing
    # no per_class in the summary: it falls back to examples.parquet (label, clean_correct)
    pc = tables(html, "per-class-table")[-1]
    assert pc[1:] == [["0", "2", "50.00", "—"], ["1", "2", "100.00", "—"]]


def test_analysis_plots_and_findings_are_embedded(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run", make_summary())
    analysis = make_analysis_dir(tmp_path / "an" / "channels", finding="CAS suppresses channels")
    out = tmp_path / "r.html"
    assert cli_main(["report", str(run), "--analysis", str(analysis), "-o", str(out)]) == 0
    html = out.read_text()
    import base64

    png = base64.b64encode((analysis / "magnitude_std.png").read_bytes()).decode()
    assert html.count(png) == 1  # embedded once: the '../outside.png' entry is refused
    assert "must not be embedded" not in html
    assert "CAS suppresses channels" in html
    (matrix,) = tables(html, "analysis-matrix")
    assert matrix[0] == ["scalar", "std", "at"]
    assert ["mean_magnitude_natural", "0.41", "0.44"] in matrix


def test_pdf_written(tmp_path: Path) -> None:
    pytest.importorskip("weasyprint", reason="WeasyPrint not installed")
    run = make_run_dir(tmp_path / "run", make_summary())
    out, pdf = tmp_path / "r.html", tmp_path / "r.pdf"
    assert cli_main(["report", str(run), "-o", str(out), "--pdf", str(pdf)]) == 0
    assert pdf.read_bytes()[:5] == b"%PDF-"


@pytest.mark.parametrize("case", ["missing", "no-summary", "bad-json"])
def test_user_mistakes_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture, case: str
) -> None:
    target = tmp_path / "run"
    if case != "missing":
        target.mkdir()
    if case == "bad-json":
        (target / "summary.json").write_text("{not json")
    rc = cli_main(["report", str(target), "-o", str(tmp_path / "r.html")])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and "evalkit report: error:" in err and "(" in err


def test_missing_pango_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    from reports import pdf

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "weasyprint":
            raise OSError(
                "cannot load library 'libpango-1.0-0': libpango-1.0-0: cannot open shared object file"
            )
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "weasyprint", raising=False)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(EvalkitError, match=r"libpango-1\.0-0.*apt-get install libpango-1\.0-0"):
        pdf.html_to_pdf("<p>x</p>", "/tmp/never.pdf")
    monkeypatch.setattr(builtins, "__import__", real_import)
    monkeypatch.setitem(sys.modules, "weasyprint", None)  # not installed at all
    with pytest.raises(EvalkitError, match=r"pip install"):
        pdf.html_to_pdf("<p>x</p>", "/tmp/never.pdf")


@pytest.mark.parametrize(
    ("eps", "shown"),
    [
        (8 / 255, "8/255"),
        ("8/255", "8/255"),
        ("0.5/255", "0.001961"),
        (0.1, "0.1"),
        (0, "0"),
        ("x", "x"),
    ],
)
def test_eps_labels(eps: object, shown: str) -> None:
    from reports.runs import fmt_eps

    assert fmt_eps(eps) == shown
