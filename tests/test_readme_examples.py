"""Every Python code block of the README runs as written (in a scratch folder), so the API the
README shows is the API that exists. The bash quickstart blocks are checked by
``test_readme_ci.py``; the other bash blocks' ``evalkit`` lines must parse with the real CLI."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PY_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def test_readme_has_python_examples():
    assert len(PY_BLOCKS) >= 2
    assert any("evalkit.evaluate(" in b and "class " in b for b in PY_BLOCKS)


@pytest.mark.parametrize("index", range(len(PY_BLOCKS)))
def test_readme_python_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = PY_BLOCKS[index]
    exec(compile(code, f"README.md python block {index + 1}", "exec"), {"__name__": "__readme__"})
    if "evalkit.evaluate(" in code and 'out="runs/tiny"' in code:
        for name in ("config.json", "summary.json", "examples.parquet"):
            assert (tmp_path / "runs" / "tiny" / name).is_file()
        assert (tmp_path / "runs" / "tiny-report.html").stat().st_size > 1000


def test_readme_cli_lines_parse():
    from evalkit.cli import main

    lines = re.findall(r"^\s*(evalkit [a-z]+ [^\n`|]*)$", README, re.M)
    for line in lines:
        argv = shlex.split(line)[1:]
        with pytest.raises(SystemExit) as exc:
            main([argv[0], "--help"])
        assert exc.value.code == 0, line
