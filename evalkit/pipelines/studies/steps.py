"""Study steps: Python calls described by (function name, keyword arguments).

A :class:`Step` names a registered :class:`StepKind` (``train``, ``evaluate``, ``analyze``) and
holds the JSON keyword arguments of the call. The kind says which arguments are input files
(checkpoints, data files) and named datasets — their content enters the step's identity (see
:mod:`evalkit.pipelines.studies.runner`) —, which output files mark it done, and how to write
the call as an equivalent ``evalkit ...`` command line for humans (FINDINGS.md). Tests register
their own kinds with :func:`register_step_kind`.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError


@dataclass(frozen=True)
class DataRef:
    """A registered dataset split whose contents (not its path) a step depends on."""

    dataset: str
    split: str
    root: str | None = None

    def key(self) -> str:
        return f"{self.dataset}:{self.split}" + (f"@{self.root}" if self.root else "")


@dataclass(frozen=True)
class Step:
    """One call: ``STEP_KINDS[fn].call(**kwargs)``; ``kwargs`` must be JSON values and hold
    ``out``, the folder the step writes (its record ``step.json`` lives there)."""

    fn: str
    kwargs: Mapping[str, Any]

    @property
    def out(self) -> Path:
        return Path(self.kwargs["out"])

    @property
    def kind(self) -> StepKind:
        return get_step_kind(self.fn)

    def command(self) -> str:
        """The equivalent ``evalkit ...`` command line (text for humans; not executed)."""
        return self.kind.command(dict(self.kwargs))


@dataclass(frozen=True)
class StepKind:
    """How to run one kind of step and what it depends on.

    ``call(progress=..., resume=..., **kwargs)`` runs it (``resume`` only when
    ``resumable``); ``files(kwargs)`` lists input files whose bytes matter, ``checkpoints``
    those that must be finished training runs, ``data(kwargs)`` named datasets; ``outputs``
    are files under ``out``, the first of which must exist when the step is done.
    """

    name: str
    call: Callable[..., Any]
    outputs: tuple[str, ...]
    files: Callable[[dict[str, Any]], list[str]] = lambda kw: []
    checkpoints: Callable[[dict[str, Any]], list[str]] = lambda kw: []
    data: Callable[[dict[str, Any]], list[DataRef]] = lambda kw: []
    command: Callable[[dict[str, Any]], str] = field(
        default=lambda kw: shlex.join(["python", "-c", repr(kw)])
    )
    resumable: bool = False


STEP_KINDS: dict[str, StepKind] = {}


def register_step_kind(kind: StepKind) -> StepKind:
    """Add (or replace) a step kind by name."""
    STEP_KINDS[kind.name] = kind
    return kind


def get_step_kind(name: str) -> StepKind:
    if name not in STEP_KINDS:
        raise EvalkitError(f"unknown study step {name!r} (known: {', '.join(STEP_KINDS)})")
    return STEP_KINDS[name]


# ------------------------------------------------------------------------------ flags


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _flags(kw: Mapping[str, Any], skip: tuple[str, ...] = ()) -> list[str]:
    """Generic keyword -> flag rendering: None dropped, True as a bare flag, lists joined."""
    out: list[str] = []
    for key, value in kw.items():
        if key in skip or value is None or value is False:
            continue
        if value is True:
            out.append(_flag(key))
        elif isinstance(value, (list, tuple)):
            out += [_flag(key), ",".join(str(v) for v in value)]
        else:
            out += [_flag(key), str(value)]
    return out


# ------------------------------------------------------------------------------ train


def _train_call(*, progress: bool = False, resume: bool = False, **kw: Any) -> Path:
    from evalkit.training.api import train

    return train(**kw, resume=resume, progress=progress)


def _train_command(kw: dict[str, Any]) -> str:
    kw = dict(kw)
    argv = ["evalkit", "train"]
    for key in ("dataset", "arch", "defense", "epochs"):
        argv += [_flag(key), str(kw.pop(key))]
    params = kw.pop("params", None) or kw.pop("defense_params", None) or {}
    for k, v in dict(params).items():
        argv += ["--param", f"{k}={v}"]
    normalize = kw.pop("normalize", None)
    if normalize is False:
        argv.append("--no-normalize")
    augment = kw.pop("augment", None)
    if augment is not None:
        argv += ["--augment", "on" if augment else "off"]
    for k, v in dict(kw.pop("arch_kwargs", None) or {}).items():
        kw.setdefault(k, v)
    out = kw.pop("out")
    argv += _flags(kw) + ["--out", str(out)]
    return shlex.join(argv)


register_step_kind(
    StepKind(
        "train",
        _train_call,
        outputs=("checkpoint.pt",),
        files=lambda kw: [kw["init"]] if kw.get("init") else [],
        checkpoints=lambda kw: [kw["init"]] if kw.get("init") else [],
        data=lambda kw: [DataRef(kw["dataset"], "train", kw.get("data_root"))],
        command=_train_command,
        resumable=True,
    )
)


# ------------------------------------------------------------------------------ evaluate


def _evaluate_call(*, progress: bool = False, resume: bool = False, **kw: Any) -> Any:
    from evalkit.evaluation.api import evaluate

    model = kw.pop("model")
    return evaluate(model, **kw, resume=resume, progress=progress, echo=False)


def _evaluate_command(kw: dict[str, Any]) -> str:
    kw = dict(kw)
    argv = ["evalkit", "attack", "--ckpt", str(kw.pop("model")), *_data_flags(kw)]
    out = kw.pop("out")
    union = kw.pop("adapt_for", None) or {}
    if any(union.values()):
        argv += ["--adapt-for", ",".join(k for k, v in union.items() if v)]
    argv += _flags(kw) + ["--out", str(out), "--no-progress"]
    return shlex.join(argv)


def _data_flags(kw: dict[str, Any]) -> list[str]:
    """``data`` (popped from ``kw``) as ``--data FILE`` or ``--dataset NAME``."""
    data = kw.pop("data", None)
    if data is None:
        return []
    return ["--data" if _data_file({"data": data}) else "--dataset", str(data)]


def _data_file(kw: Mapping[str, Any]) -> list[str]:
    data = kw.get("data")
    return [str(data)] if isinstance(data, str) and Path(data).suffix in (".npz", ".pt") else []


def _test_split(kw: Mapping[str, Any]) -> list[DataRef]:
    if _data_file(kw):
        return []
    name = kw.get("data") or kw.get("dataset")
    if not name:
        raise EvalkitError("a study step must name its dataset (dataset=...)")
    return [DataRef(str(name), "test", kw.get("data_root"))]


register_step_kind(
    StepKind(
        "evaluate",
        _evaluate_call,
        outputs=("summary.json", "examples.parquet"),
        files=lambda kw: [kw["model"], *_data_file(kw)],
        checkpoints=lambda kw: [kw["model"]],
        data=_test_split,
        command=_evaluate_command,
        resumable=True,
    )
)


# ------------------------------------------------------------------------------ analyze


def _model_paths(kw: Mapping[str, Any]) -> list[str]:
    models = kw["models"]
    if isinstance(models, Mapping):
        return [str(v) for v in models.values()]
    if isinstance(models, str):
        return [models]
    return [str(m) for m in models]


def _analyze_call(*, progress: bool = False, resume: bool = False, **kw: Any) -> Any:
    from evalkit.analyses import analyze

    models = kw.pop("models")
    return analyze(models, **kw, progress=progress)


def _analyze_command(kw: dict[str, Any]) -> str:
    kw = dict(kw)
    argv = ["evalkit", "analyze"]
    models = kw.pop("models")
    if isinstance(models, Mapping):
        for label, path in models.items():
            argv += ["--ckpt", f"{label}={path}"]
    else:
        for path in _model_paths({"models": models}):
            argv += ["--ckpt", path]
    argv += ["--analysis", str(kw.pop("analysis", "channels")), *_data_flags(kw)]
    if kw.get("class_k") is not None:
        argv += ["--class", str(kw.pop("class_k"))]
    kw.pop("class_k", None)
    if isinstance(kw.get("eps"), (list, tuple)):
        kw["eps"] = ",".join(str(e) for e in kw["eps"])
    out = kw.pop("out")
    argv += _flags(kw) + ["--out", str(out), "--quiet"]
    return shlex.join(argv)


register_step_kind(
    StepKind(
        "analyze",
        _analyze_call,
        outputs=("analysis.json",),
        files=lambda kw: [*_model_paths(kw), *_data_file(kw)],
        checkpoints=_model_paths,
        data=_test_split,
        command=_analyze_command,
    )
)


__all__ = [
    "STEP_KINDS",
    "DataRef",
    "Step",
    "StepKind",
    "get_step_kind",
    "register_step_kind",
]
