"""What a reproduction study is: scales, models to train, steps to run, claims to judge.

A study is data (a :class:`Study`): per training seed, the models to train (:class:`ModelDef`)
and the evaluation and analysis steps (:class:`~evalkit.pipelines.studies.steps.Step`, a
Python call described by a function name and keyword arguments), plus a judge from
:mod:`analysis.studies.judges` that reads what the steps wrote and returns one
:class:`~analysis.studies.spec.Finding` per claim.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from analysis.studies.spec import VERDICTS, Finding, StudyContext

if TYPE_CHECKING:
    from evalkit.pipelines.studies.steps import Step


@dataclass(frozen=True)
class Scale:
    """Sizes of one scale (``cpu``, ``medium``, ``gpu``).

    ``train_options`` are keyword options of :func:`evalkit.training.api.train` (``width``,
    ``lr``, ``attack_steps``, ``n_train``, ...); ``seeds`` the training seeds every model is
    trained with (claims about training are judged across them); ``data_root`` where the
    dataset's files are when not in evalkit's default places.
    """

    name: str
    dataset: str
    arch: str
    epochs: int
    eps: str  # training and evaluation budget, e.g. "0.1" (Fashion-MNIST) or "8/255" (CIFAR)
    n_eval: int  # test examples evaluated
    preset: str  # protocol preset for robust-accuracy runs
    train_options: Mapping[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0, 1, 2)
    data_root: str | None = None
    notes: str = ""

    def describe(self) -> dict[str, Any]:
        """Plain-JSON view for ``findings.json``."""
        return {
            "name": self.name,
            "dataset": self.dataset,
            "arch": self.arch,
            "epochs": self.epochs,
            "eps": self.eps,
            "n_eval": self.n_eval,
            "preset": self.preset,
            "train_options": dict(self.train_options),
            "seeds": list(self.seeds),
            "data_root": self.data_root,
            "notes": self.notes,
        }


@dataclass(frozen=True)
class ModelDef:
    """One model to train per seed: a key (folder ``KEY-s<seed>``, shared across studies), a
    defense SPEC, extra :func:`~evalkit.training.api.train` options, and ``init``: the key of
    a model of the same seed to warm-start from (CIFS's natural pre-training)."""

    key: str
    defense: str
    options: Mapping[str, Any] = field(default_factory=dict)
    init: str | None = None


@dataclass
class Study:
    """A named study: its claims, models, per-seed steps and judge."""

    name: str
    title: str
    paper: str
    claims: list[str]
    models: Callable[[Scale], list[ModelDef]]
    evaluations: Callable[[StudyContext, int], list[Step]]  # per training seed
    analyses: Callable[[StudyContext, int], list[Step]]  # per training seed
    judge: Callable[[StudyContext], list[Finding]]
    scales: dict[str, Scale] = field(default_factory=dict)


__all__ = ["VERDICTS", "Finding", "ModelDef", "Scale", "Study", "StudyContext"]
