"""What a reproduction study is: models to train, commands to run, claims to judge.

A study is data (a :class:`Study`) plus a judge function that reads the run directories'
``summary.json`` and the analyses' ``analysis.json`` and returns one :class:`Finding` per claim,
with a verdict that is computed from measured numbers only: nothing is tuned to force it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VERDICTS = ("reproduced", "partly", "not reproduced", "inconclusive")


@dataclass(frozen=True)
class Scale:
    """Sizes of one scale: ``cpu`` (minutes on 2 cores) or ``gpu`` (papers' models, reduced epochs)."""

    name: str
    dataset: str
    arch: str
    epochs: int
    eps: str  # training and evaluation budget, e.g. "0.1" (Fashion-MNIST) or "8/255" (CIFAR)
    n_eval: int  # test examples evaluated
    preset: str  # harness preset for robust-accuracy runs
    train_args: tuple[str, ...] = ()  # extra `evalkit train` flags (width, n-train, lr, ...)
    notes: str = ""


@dataclass(frozen=True)
class ModelDef:
    """One model to train: a key (folder name, shared across studies) and a defense SPEC."""

    key: str
    defense: str
    train_args: tuple[str, ...] = ()


@dataclass
class Finding:
    claim: str
    verdict: str
    numbers: dict[str, Any]
    explanation: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "claim": self.claim,
            "verdict": self.verdict,
            "numbers": self.numbers,
            "explanation": self.explanation,
        }


@dataclass
class StudyContext:
    """Where a study's outputs live, handed to step builders and judges."""

    out: Path
    models_dir: Path
    scale: Scale
    device: str
    seed: int

    def ckpt(self, key: str) -> Path:
        return self.models_dir / key / "checkpoint.pt"

    def run_dir(self, key: str) -> Path:
        return self.out / "runs" / key

    def analysis_dir(self, name: str) -> Path:
        return self.out / "analysis" / name


# A step is ("evalkit", argv) or ("python", module, argv); builders return the ordered list.
Step = tuple[str, ...]


@dataclass
class Study:
    name: str
    title: str
    paper: str
    claims: list[str]
    models: Callable[[Scale], list[ModelDef]]
    evaluations: Callable[[StudyContext], list[list[str]]]  # evalkit argv lists (attack runs)
    analyses: Callable[[StudyContext], list[list[str]]]  # evalkit/python argv lists
    judge: Callable[[StudyContext], list[Finding]]
    scales: dict[str, Scale] = field(default_factory=dict)
