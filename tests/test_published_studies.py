"""What docs/studies publishes is what the current renderers make of its findings.json files,
every published verdict carries its seeds (>= 3) and interval, and the README's table is the
same table: no number in the docs is typed by hand."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from analysis.studies.judges import MIN_TRAINING_SEEDS
from evalkit.pipelines.studies.runner import _interval_text, verdict_table, write_index

ROOT = Path(__file__).resolve().parents[1]
STUDIES_DIR = ROOT / "docs" / "studies"
FINDINGS = sorted(STUDIES_DIR.glob("*/*/findings.json"))
README_BLOCK = re.compile(r"<!-- studies:start -->\n(.*?)\n<!-- studies:end -->", flags=re.DOTALL)


def test_there_are_published_studies():
    assert FINDINGS, "docs/studies holds no findings.json"


@pytest.mark.parametrize("path", FINDINGS, ids=lambda p: f"{p.parent.parent.name}-{p.parent.name}")
def test_every_published_verdict_has_seeds_and_an_interval(path):
    rec = json.loads(path.read_text())
    assert len(rec["seeds"]) >= MIN_TRAINING_SEEDS
    assert rec["steps_total"] == len(rec["steps"]) > 0
    assert all(s["wall_time_s"] is not None for s in rec["steps"])
    for f in rec["findings"]:
        assert f["seeds"] == rec["seeds"]
        # an interval, or an inconclusive verdict saying why there is none
        assert "interval" in f or f["verdict"] == "inconclusive", f["claim"]
        if "interval" in f:
            lo, hi = f["interval"]
            assert lo <= f["effect"] <= hi


@pytest.mark.parametrize("path", FINDINGS, ids=lambda p: f"{p.parent.parent.name}-{p.parent.name}")
def test_findings_md_shows_the_recorded_verdicts(path):
    """FINDINGS.md, the page a reader opens, states each verdict and interval of findings.json
    and the command that regenerates them."""
    rec = json.loads(path.read_text())
    text = (path.parent / "FINDINGS.md").read_text()
    assert f"Regenerate: `{rec['command']}`" in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    for f in rec["findings"]:
        head = f"| {f['claim']} | **{f['verdict']}** | {_interval_text(f)} |"
        assert sum(r.startswith(head) for r in rows) == 1, head
    computed = rec["steps_computed"]
    assert f"{computed} computed in this run" in text


def test_index_regenerates_from_the_findings(tmp_path):
    for path in FINDINGS:
        dst = tmp_path / path.relative_to(STUDIES_DIR)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(path.read_text())
    write_index(tmp_path)
    expected = (tmp_path / "README.md").read_text().replace(tmp_path.as_posix(), "docs/studies")
    assert (STUDIES_DIR / "README.md").read_text() == expected


def test_readme_table_is_the_published_one():
    block = README_BLOCK.search((ROOT / "README.md").read_text())
    assert block, "README.md lacks the <!-- studies:start --> ... <!-- studies:end --> table"
    assert block.group(1) == "\n".join(verdict_table(STUDIES_DIR, "docs/studies/"))
