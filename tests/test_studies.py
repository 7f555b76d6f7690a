"""Reproduction studies: catalog sanity (fast) and the smallest study end to end (slow)."""

import json

import pytest

from analysis.studies import STUDIES, scale_for
from analysis.studies.judges import _trend
from analysis.studies.spec import VERDICTS, StudyContext
from evalkit.cli import main


def test_catalog_covers_the_five_findings():
    assert set(STUDIES) == {"channels", "cas-cifs", "he", "sap-eot", "pooling"}
    for study in STUDIES.values():
        assert study.claims and set(study.scales) == {"cpu", "gpu"}


@pytest.mark.parametrize("scale", ["cpu", "gpu"])
def test_every_step_is_a_valid_command(tmp_path, scale):
    """Each study's commands parse with the real CLI parsers (no typos in flags)."""
    import argparse

    from evalkit.cli import _command_module

    s = scale_for(scale)
    for study in STUDIES.values():
        ctx = StudyContext(
            out=tmp_path / study.name, models_dir=tmp_path / "models", scale=s, device="cpu", seed=0
        )
        for argv in study.evaluations(ctx) + study.analyses(ctx):
            if argv[0] == "python":
                import importlib

                importlib.import_module(argv[1]).build_parser().parse_args(argv[2:])
                continue
            parser = argparse.ArgumentParser()
            sub = parser.add_subparsers()
            _command_module(argv[0]).add_parser(sub)
            parser.parse_args(argv)


def test_trend_is_rank_correlation():
    assert _trend([(1, 0.1), (2, 0.2), (3, 0.3)]) == pytest.approx(1.0)
    assert _trend([(1, 0.3), (2, 0.2), (3, 0.1)]) == pytest.approx(-1.0)


@pytest.mark.slow
def test_smallest_study_end_to_end(tmp_path):
    code = main(
        [
            "study",
            "sap-eot",
            "--scale",
            "cpu",
            "--epochs",
            "2",
            "--out",
            str(tmp_path),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    out = tmp_path / "sap-eot"
    findings = json.loads((out / "findings.json").read_text())["findings"]
    assert len(findings) == 2 and all(f["verdict"] in VERDICTS for f in findings)
    assert (out / "report.html").stat().st_size > 10_000
    assert "SAP" in (out / "FINDINGS.md").read_text()
