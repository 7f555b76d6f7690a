"""Hostile strings in a checkpoint (its folder name, its training config) or the title are shown
as text: escaped in the HTML, and no script runs when Chromium opens the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import one_thread
from test_report_fixtures import (
    XSS,
    chromium_binary,
    console_errors,
    make_real_run,
    run_chromium,
)

from evalkit.cli import main as cli_main

# no '/' allowed in a folder name; would mark the page if its handler ever ran
XSS_FOLDER = "<img src=x onerror=document.body.dataset.pwned=1>"


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("xss")
    with one_thread():
        run = make_real_run(root, "run", note=XSS, folder=XSS_FOLDER, eps=("8/255",), n=24)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["model"]["train_config"]["note"] == XSS  # the string really reached the run
    assert XSS_FOLDER in summary["model"]["path"]
    out = root / "report.html"
    assert cli_main(["report", str(run), "-o", str(out), "--title", XSS]) == 0
    return out


def test_hostile_text_is_escaped(hostile_report: Path) -> None:
    html = hostile_report.read_text()
    assert XSS not in html and XSS_FOLDER not in html
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=document.body.dataset.pwned=1&gt;" in html


def test_no_script_runs_in_chromium(hostile_report: Path, tmp_path: Path) -> None:
    if chromium_binary() is None:
        pytest.skip("chromium not installed (apt-get install chromium); CI installs it")
    proc = run_chromium(hostile_report, tmp_path, dump_dom=True)
    dom = proc.stdout
    assert "<body" in dom, proc.stderr[-2000:]
    assert "<script" not in dom.lower()
    assert "data-pwned" not in dom
    assert '<img src="x"' not in dom
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom  # shown as text
    assert console_errors(proc.stderr) == []
