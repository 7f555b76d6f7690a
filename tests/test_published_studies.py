"""What docs/studies publishes is what the current renderers make of its findings.json files,
every published verdict carries its seeds (>= 3) and interval, and the README's table is the
same table: no number in the docs is typed by hand."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from analysis.studies.values import MIN_TRAINING_SEEDS
from evalkit.pipelines.studies.runner import verdict_table, write_index

ROOT = Path(__file__).resolve().parents[1]
STUDIES_DIR = ROOT / "docs" / "studies"
FINDINGS = sorted(STUDIES_DIR.glob("*/*/findings.json"))
README_BLOCK = re.compile(r"<!-- studies:start -->\n(.*?)\n<!-- studies:end -->", flags=re.DOTALL)
# An interval cell as a reader sees it: optional signed effect, then [low, high], 4 decimals.
_NUM = r"[+-]\d+\.\d{4}"
INTERVAL_CELL = re.compile(rf"^(?:(?P<effect>{_NUM}) )?\[(?P<low>{_NUM}), (?P<high>{_NUM})\]$")
SHOWN = 0.5e-4 + 1e-12  # 4 decimals shown: a number is off by at most half the last digit


def _cell_after(row: str, head: str) -> str:
    """The table cell that follows ``head`` in ``row`` (empty for an empty cell)."""
    return row[len(head) :].split(" | ", 1)[0].rstrip(" |").strip()


def _check_interval_cell(cell: str, f: dict) -> None:
    """The cell shows findings.json's effect and interval, read back as numbers (not by
    re-running the renderer's formatting, which would compare the code with itself)."""
    if "interval" not in f or not f["interval"]:
        assert cell == "", (f["claim"], cell)
        return
    m = INTERVAL_CELL.match(cell)
    assert m, (f["claim"], cell)
    lo, hi = f["interval"]
    assert abs(float(m["low"]) - lo) <= SHOWN and abs(float(m["high"]) - hi) <= SHOWN, cell
    if isinstance(f.get("effect"), (int, float)):
        assert m["effect"] is not None and abs(float(m["effect"]) - f["effect"]) <= SHOWN, cell
    else:
        assert m["effect"] is None, cell


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
        head = f"| {f['claim']} | **{f['verdict']}** | "
        matching = [r for r in rows if r.startswith(head)]
        assert len(matching) == 1, head
        _check_interval_cell(_cell_after(matching[0], head), f)
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
