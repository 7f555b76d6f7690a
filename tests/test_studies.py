"""Reproduction studies: catalog sanity (fast) and the smallest study end to end (slow)."""

import json

import pytest

from analysis.studies.spec import VERDICTS
from evalkit.cli import main
from evalkit.pipelines.studies import STUDIES, scale_for


def test_catalog_covers_the_six_findings():
    assert set(STUDIES) == {"channels", "cas-cifs", "he", "sap-eot", "pooling", "bpda"}
    for study in STUDIES.values():
        assert study.claims and set(study.scales) == {"cpu", "medium", "gpu"}


def test_scale_overrides_and_errors():
    s = scale_for("cpu", epochs=2, seeds=[3, 4, 5], data_root="/data")
    assert (s.epochs, s.seeds, s.data_root) == (2, (3, 4, 5), "/data")
    from evalkit.errors import EvalkitError

    with pytest.raises(EvalkitError, match="unknown scale"):
        scale_for("tpu")
    with pytest.raises(EvalkitError, match="distinct"):
        scale_for("cpu", seeds=[1, 1])


def test_unknown_study_is_one_line(capsys):
    assert main(["study", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown study 'nope'" in err and len(err.splitlines()) == 1


def test_index_shows_intervals_seeds_and_what_was_not_measured(tmp_path):
    """The published index renders each verdict with its interval and seeds, and names every
    (study, scale) of the catalog that has no findings, so a missing scale is never implied."""
    from evalkit.pipelines.studies.runner import write_index

    rec = {
        "study": "he",
        "scale": "cpu",
        "seeds": [0, 1, 2],
        "command": "evalkit study he --scale cpu --fresh",
        "findings": [
            {
                "claim": "HE helps",
                "verdict": "inconclusive",
                "effect": 0.01,
                "interval": [-0.02, 0.04],
            }
        ],
    }
    (tmp_path / "he" / "cpu").mkdir(parents=True)
    (tmp_path / "he" / "cpu" / "findings.json").write_text(json.dumps(rec))
    write_index(tmp_path)
    text = (tmp_path / "README.md").read_text()
    row = next(line for line in text.splitlines() if "HE helps" in line)
    assert "**inconclusive**" in row and "+0.0100 [-0.0200, +0.0400]" in row and "0,1,2" in row
    missing = text.split("Not published", 1)[1]
    assert "`cpu`: channels, cas-cifs, sap-eot, pooling" in missing
    assert "`medium`: channels, cas-cifs, he" in missing and "`gpu`" in missing


@pytest.mark.slow
def test_smallest_study_end_to_end(tmp_path):
    argv = ["study", "sap-eot", "--scale", "cpu", "--epochs", "1", "--seeds", "0,1"]
    argv += ["--out", str(tmp_path), "--device", "cpu"]
    assert main(argv) == 0
    out = tmp_path / "sap-eot"
    doc = json.loads((out / "findings.json").read_text())
    assert len(doc["findings"]) == 2 and all(f["verdict"] in VERDICTS for f in doc["findings"])
    assert doc["seeds"] == [0, 1] and doc["steps_reused"] == 0
    assert all(s["wall_time_s"] > 0 for s in doc["steps"])
    assert (out / "report.html").stat().st_size > 10_000
    md = (out / "FINDINGS.md").read_text()
    assert "SAP" in md and "evalkit train --dataset fashion-mnist-mini" in md
    # a rerun reuses every step and reports the times measured when they were computed
    assert main(argv) == 0
    again = json.loads((out / "findings.json").read_text())
    assert again["steps_reused"] == again["steps_total"]
    assert [s["wall_time_s"] for s in again["steps"]] == [s["wall_time_s"] for s in doc["steps"]]


def test_publishing_needs_three_training_seeds(tmp_path, capsys):
    argv = ["study", "he", "--seeds", "0,1", "--out", str(tmp_path), "--publish", str(tmp_path)]
    assert main(argv) == 2
    assert "at least 3 training seeds" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before any step ran


def test_study_help_names_every_study():
    from evalkit.commands.study import EPILOG
    from evalkit.pipelines.studies import STUDIES

    listed = EPILOG.splitlines()[0].removeprefix("studies: ").removesuffix(" (or all)").split(", ")
    assert listed == list(STUDIES)
