"""The study runner's content-keyed reuse, checkpoint completion, and the analyze/report APIs.

The runner tests use tiny fake step kinds (no training) so they run in well under a second:
``fake_train`` writes a checkpoint, ``fake_use`` reads one and records what it saw.
"""

from __future__ import annotations

import ast
import itertools
import json
from pathlib import Path

import pytest
import torch

from evalkit.checkpoint import save_checkpoint
from evalkit.errors import EvalkitError
from evalkit.models import build_model
from evalkit.pipelines.studies.runner import StepRunner, read_record, record_path
from evalkit.pipelines.studies.steps import DataRef, Step, StepKind, register_step_kind
from evalkit.training.api import require_complete, training_complete

ROOT = Path(__file__).resolve().parents[1]
CALLS: list[tuple[str, str]] = []  # (kind, out) of every real call
TRAININGS = itertools.count(1)


def _save(path: Path, *, value: float = 0.0, epoch: int = 2, epochs: int = 2) -> None:
    """A real evalkit checkpoint of a tiny model; ``epoch < epochs`` marks it unfinished."""
    torch.manual_seed(0)
    model = build_model("smallcnn", num_classes=10, in_channels=1, width=2)
    with torch.no_grad():
        next(model.parameters()).fill_(value)
    save_checkpoint(
        path,
        model,
        dataset="fashion-mnist-mini",
        input_size=28,
        defense="standard",
        train_config={"epochs": epochs, "completed": epoch >= epochs},
        epoch=epoch,
    )


def _fake_train(*, out: str, value: float, progress: bool = False, resume: bool = False) -> None:
    CALLS.append(("fake_train", out))
    Path(out).mkdir(parents=True, exist_ok=True)
    # like the real trainer, a rerun writes new bytes (the real one records its creation time)
    _save(Path(out) / "checkpoint.pt", value=value + 1e-3 * next(TRAININGS))


def _fake_use(
    *, model: str, out: str, tag: str = "", progress: bool = False, resume: bool = False
) -> None:
    CALLS.append(("fake_use", out))
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "result.json").write_text(json.dumps({"model": model, "resume": resume}))


register_step_kind(StepKind("fake_train", _fake_train, outputs=("checkpoint.pt",), resumable=True))
register_step_kind(
    StepKind(
        "fake_use",
        _fake_use,
        outputs=("result.json",),
        files=lambda kw: [kw["model"]],
        checkpoints=lambda kw: [kw["model"]],
        resumable=True,
    )
)


def _pipeline(tmp: Path) -> tuple[list[Step], Path]:
    """train A; use A twice; use an external checkpoint Z once."""
    ext = tmp / "external.pt"
    if not ext.exists():
        _save(ext, value=5.0)
    a = tmp / "models" / "a"
    steps = [
        Step("fake_train", {"out": str(a), "value": 1.0}),
        Step("fake_use", {"model": str(a / "checkpoint.pt"), "out": str(tmp / "runs" / "b")}),
        Step("fake_use", {"model": str(a / "checkpoint.pt"), "out": str(tmp / "runs" / "c")}),
        Step("fake_use", {"model": str(ext), "out": str(tmp / "runs" / "d")}),
    ]
    return steps, ext


def _run(steps: list[Step], **kw) -> list[str]:
    runner = StepRunner(say=lambda _: None, **kw)
    return [runner.run(s).status for s in steps]


@pytest.fixture(autouse=True)
def _clear_calls():
    CALLS.clear()


def test_second_run_reuses_every_step_with_its_recorded_time(tmp_path):
    steps, _ = _pipeline(tmp_path)
    assert _run(steps) == ["computed"] * 4
    first = [read_record(s.out) for s in steps]
    runner = StepRunner(say=lambda _: None)
    outcomes = [runner.run(s) for s in steps]
    assert [o.status for o in outcomes] == ["reused"] * 4 and len(CALLS) == 4
    for o, rec in zip(outcomes, first):
        assert o.wall_time_s == rec["wall_time_s"] and o.wall_time_s > 0
        assert o.computed_at == rec["finished"]
        assert "reused; took" in o.time_text() and "when computed" in o.time_text()


def test_new_checkpoint_bytes_recompute_every_step_that_used_them(tmp_path):
    steps, ext = _pipeline(tmp_path)
    _run(steps)
    # an external checkpoint replaced by different weights: only its consumer reruns
    _save(ext, value=6.0)
    assert _run(steps) == ["reused", "reused", "reused", "computed"]
    # the trained checkpoint changed on disk: its producer reruns, writing new bytes, and so
    # does every step that read it; the step on the untouched external model is reused
    _save(steps[0].out / "checkpoint.pt", value=9.0)
    CALLS.clear()
    assert _run(steps) == ["computed", "computed", "computed", "reused"]
    assert [k for k, _ in CALLS] == ["fake_train", "fake_use", "fake_use"]


def test_other_code_recomputes_every_step(tmp_path):
    """A result computed by other evalkit code is not current: a different source digest makes
    every step run again, and the record names the digest that produced it."""
    steps, _ = _pipeline(tmp_path)
    assert _run(steps, code_sha="a" * 64) == ["computed"] * 4
    assert _run(steps, code_sha="a" * 64) == ["reused"] * 4
    assert _run(steps, code_sha="b" * 64) == ["computed"] * 4
    assert read_record(steps[1].out)["code_sha256"] == "b" * 64


def test_source_digest_follows_the_bytes_of_the_code(tmp_path, monkeypatch):
    from evalkit.evaluation.fingerprint import source_sha256

    pkg = tmp_path / "toypkg_for_digest"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    first = source_sha256(("toypkg_for_digest",))
    (pkg / "__init__.py").write_text("X = 2\n")
    source_sha256.cache_clear()
    assert source_sha256(("toypkg_for_digest",)) != first
    # files that only orchestrate and judge studies are left out: editing them reuses steps
    (pkg / "judging").mkdir()
    (pkg / "judging" / "rules.py").write_text("R = 1\n")
    source_sha256.cache_clear()
    kept = source_sha256(("toypkg_for_digest",), exclude=("toypkg_for_digest/judging/",))
    (pkg / "judging" / "rules.py").write_text("R = 2\n")
    source_sha256.cache_clear()
    assert source_sha256(("toypkg_for_digest",), exclude=("toypkg_for_digest/judging/",)) == kept
    assert len(source_sha256()) == 64


def test_changed_arguments_or_data_recompute(tmp_path, monkeypatch):
    steps, _ = _pipeline(tmp_path)
    _run(steps)
    changed = Step("fake_use", {**steps[1].kwargs, "tag": "other"})
    assert _run([changed]) == ["computed"]
    kind = StepKind(
        "fake_data",
        _fake_use,
        outputs=("result.json",),
        data=lambda kw: [DataRef("fashion-mnist-mini", "test")],
    )
    register_step_kind(kind)
    step = Step("fake_data", {"model": "m", "out": str(tmp_path / "data")})
    assert _run([step]) == ["computed"] and _run([step]) == ["reused"]
    monkeypatch.setattr(StepRunner, "data_sha", lambda self, ref: "0" * 64)
    assert _run([step]) == ["computed"]  # the dataset's contents changed


def test_unfinished_checkpoint_is_refused_in_one_line(tmp_path):
    ckpt = tmp_path / "half.pt"
    _save(ckpt, epoch=4, epochs=8)
    step = Step("fake_use", {"model": str(ckpt), "out": str(tmp_path / "r")})
    with pytest.raises(EvalkitError, match="unfinished") as err:
        StepRunner(say=lambda _: None).run(step)
    assert "epoch 4 of 8" in str(err.value) and len(str(err.value).splitlines()) == 1
    assert not CALLS and read_record(step.out) is None


def test_fresh_reruns_everything_once_per_runner(tmp_path):
    steps, _ = _pipeline(tmp_path)
    _run(steps)
    CALLS.clear()
    runner = StepRunner(fresh=True, say=lambda _: None)
    assert [runner.run(s).status for s in steps] == ["computed"] * 4
    # a second study in the same invocation shares the steps: computed once, then reused
    assert [runner.run(s).status for s in steps] == ["reused"] * 4
    assert len(CALLS) == 4


def test_an_interrupted_fresh_run_continues_where_it_stopped(tmp_path):
    """`evalkit study ... --fresh` killed half-way and started again reuses what the first
    attempt computed (same session), resumes the step it was in, and a new session (after
    end_session) recomputes everything."""
    from evalkit.pipelines.studies.runner import end_session, fresh_session

    steps, _ = _pipeline(tmp_path)
    _run(steps)  # an older run: a fresh run must not reuse it
    CALLS.clear()
    sid = fresh_session(tmp_path, "study x")
    assert _run(steps[:3], fresh=True, session=sid) == ["computed"] * 3
    # the kill: the last step (on the external checkpoint) was running when the process died
    last = steps[3]
    _run([last], fresh=True, session=sid)
    rec = read_record(last.out)
    record_path(last.out).write_text(json.dumps({**rec, "status": "running"}))
    again = fresh_session(tmp_path, "study x")
    assert again == sid
    assert _run(steps, fresh=True, session=again) == ["reused"] * 3 + ["resumed"]
    assert fresh_session(tmp_path, "another study") != sid  # another command starts anew
    end_session(tmp_path)
    assert fresh_session(tmp_path, "study x") != sid


def test_interrupted_step_is_resumed_and_changed_output_recomputed(tmp_path):
    steps, _ = _pipeline(tmp_path)
    _run(steps[:2])
    use = steps[1]
    rec = read_record(use.out)
    # a kill mid-step leaves the "running" record and partial output
    record_path(use.out).write_text(json.dumps({**rec, "status": "running"}))
    assert _run([use]) == ["resumed"]
    assert json.loads((use.out / "result.json").read_text())["resume"] is True
    (use.out / "result.json").write_text("{}")  # output edited after it was recorded
    assert _run([use]) == ["computed"]


def test_training_complete_reads_flag_and_older_checkpoints():
    assert training_complete({"train_config": {"epochs": 8, "completed": True}, "epoch": 8})
    assert not training_complete({"train_config": {"epochs": 8, "completed": False}, "epoch": 8})
    assert not training_complete({"train_config": {"epochs": 8}, "epoch": 4})  # before the flag
    assert training_complete({"train_config": {"epochs": 8}, "epoch": 8})
    assert training_complete({})  # foreign: nothing says it is in progress


def test_require_complete_accepts_finished_and_foreign(tmp_path):
    done, foreign = tmp_path / "done.pt", tmp_path / "foreign.pt"
    _save(done)
    torch.save({"w": torch.zeros(2)}, foreign)
    require_complete(done)
    require_complete(foreign)


# ------------------------------------------------------------------------------ studies


def test_study_steps_are_python_calls_with_equivalent_commands(tmp_path):
    """Every step of every study at every scale: JSON arguments, a registered function, and a
    command line the real CLI parses (no typo in a flag)."""
    import argparse

    from analysis.studies.spec import StudyContext
    from evalkit.cli import _command_module
    from evalkit.pipelines.studies import STUDIES, plan, scale_for

    parsers = {}
    for name in ("train", "attack", "analyze"):
        parser = argparse.ArgumentParser()
        _command_module(name).add_parser(parser.add_subparsers())
        parsers[name] = parser
    for scale in ("cpu", "medium", "gpu"):
        s = scale_for(scale)
        assert len(s.seeds) >= 3
        for study in STUDIES.values():
            ctx = StudyContext(
                out=tmp_path / study.name,
                models_dir=tmp_path / "models",
                scale=s,
                device="cpu",
                seeds=s.seeds,
            )
            steps = plan(study, ctx)
            trained = {st.kwargs["seed"] for st in steps if st.fn == "train"}
            assert trained == set(s.seeds)
            for step in steps:
                json.dumps(dict(step.kwargs))
                import shlex

                argv = shlex.split(step.command())
                assert argv[0] == "evalkit"
                parsers[argv[1]].parse_args(argv[1:])


def test_medium_scale_is_resnet18_on_the_full_split():
    from evalkit.pipelines.studies import SCALES

    m = SCALES["medium"]
    assert (m.dataset, m.arch) == ("fashion-mnist", "resnet18")
    assert m.train_options["width"] < 64 and set(SCALES) == {"cpu", "medium", "gpu"}


# ------------------------------------------------------------------------------ layering


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_arrows_run_one_way():
    """pipelines never import the CLI; analysis/ and reports/ never import pipelines or CLI."""

    def bad(files, prefixes):
        return {
            (str(f.relative_to(ROOT)), m)
            for f in files
            for m in _imports(f)
            if any(m == p or m.startswith(p + ".") for p in prefixes)
        }

    pipelines = list((ROOT / "evalkit" / "pipelines").rglob("*.py"))
    assert bad(pipelines, ["evalkit.commands", "evalkit.cli"]) == set()
    lower = list((ROOT / "analysis").rglob("*.py")) + list((ROOT / "reports").rglob("*.py"))
    assert bad(lower, ["evalkit.commands", "evalkit.cli", "evalkit.pipelines"]) == set()
    api = [ROOT / "evalkit" / n for n in ("analyses.py", "reporting.py")] + [
        ROOT / "evalkit" / "training" / "api.py"
    ]
    assert bad(api, ["evalkit.commands", "evalkit.cli", "evalkit.pipelines"]) == set()
    # evalkit.analyses imports the analysis package only lazily (inside functions)
    tree = ast.parse((ROOT / "evalkit" / "analyses.py").read_text())
    top = {
        n.module if isinstance(n, ast.ImportFrom) else a.name
        for n in tree.body
        if isinstance(n, (ast.Import, ast.ImportFrom))
        for a in (n.names if isinstance(n, ast.Import) else [None])
    }
    assert not any(m and (m == "analysis" or m.startswith("analysis.")) for m in top)


# ------------------------------------------------------------------------------ analyze / report


def _tiny_module() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("smallcnn", num_classes=10, in_channels=1, width=4).eval()


def _tiny_data(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    from evalkit.data import load_split

    split = load_split("fashion-mnist-mini", "test").first(n)
    return split.float_batch(slice(None)), split.y


def test_registry_lists_the_builtin_analyses():
    from evalkit.analyses import available_analyses

    assert {"channels", "importance", "pooling", "sap-eot"} <= set(available_analyses())


def test_a_new_analysis_is_one_decorated_function(tmp_path):
    """The extension path: register a function, and analyze() runs it on modules and tensors."""
    from analysis.io import AnalysisWriter
    from evalkit.analyses import AnalysisInputs, analyze, register_analysis

    @register_analysis("toy-accuracy", description="clean accuracy per model")
    def toy(inputs: AnalysisInputs, *, scale: float = 1.0) -> dict:
        writer = AnalysisWriter(inputs.out, "toy-accuracy")
        scalars = {}
        for e in inputs.models:
            with torch.no_grad():
                pred = e.model(inputs.x.to(inputs.device) * scale).argmax(1).cpu()
            scalars[e.label] = {"accuracy": float((pred == inputs.y).float().mean())}
        writer.finish(
            models=[e.describe() for e in inputs.models], params={}, scalars=scalars, finding="toy"
        )
        return scalars

    x, y = _tiny_data()
    res = analyze(
        {"a": _tiny_module()},
        analysis="toy-accuracy",
        data=(x, y),
        out=tmp_path,
        device="cpu",
        progress=False,
    )
    model = _tiny_module()
    expected = float((model(x).argmax(1) == y).float().mean())
    assert res.scalars["a"]["accuracy"] == pytest.approx(expected)
    assert res.doc["study"] == "toy-accuracy" and res.out == tmp_path
    with pytest.raises(EvalkitError, match="no option 'bogus'"):
        analyze(
            _tiny_module(),
            analysis="toy-accuracy",
            data=(x, y),
            out=tmp_path,
            bogus=1,
            device="cpu",
        )
    with pytest.raises(EvalkitError, match="unknown analysis 'nope'"):
        analyze(_tiny_module(), analysis="nope", data=(x, y), device="cpu")


def test_analyze_channels_from_the_api_with_labels_and_class_filter(tmp_path):
    from evalkit.analyses import analyze

    ckpt = tmp_path / "m.pt"
    _save(ckpt)
    res = analyze(
        {"std": str(ckpt)},
        analysis="channels",
        n=6,
        class_k=2,
        steps=1,
        out=tmp_path / "an",
        device="cpu",
        progress=False,
    )
    assert list(res.scalars) == ["std"] and res.doc["params"]["n_examples"] == 6
    assert res.doc["params"]["class"] == 2
    with pytest.raises(EvalkitError, match="data=None needs"):
        analyze(_tiny_module(), analysis="channels", device="cpu")


def test_report_takes_result_objects_and_refuses_unwritten_ones(tmp_path):
    from types import SimpleNamespace

    from evalkit.reporting import report

    with pytest.raises(EvalkitError, match="run_dir"):
        report([SimpleNamespace(run_dir=None)], out=tmp_path / "r.html")
    with pytest.raises(EvalkitError, match="nothing to report"):
        report([], out=tmp_path / "r.html")
