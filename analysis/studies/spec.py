"""What the judges of a reproduction study read and return.

A judge (``analysis/studies/judges.py``) gets a :class:`StudyContext` — where the study's
outputs are, per model key and training seed — and returns one :class:`Finding` per claim.
The studies themselves (scales, models, steps) are defined by the pipelines
(:mod:`evalkit.pipelines.studies`), which import this module, never the other way round.

Output layout under a study's folder, for model key ``k``, analysis ``a`` and training seed
``s``: checkpoints ``MODELS/k-s<s>/checkpoint.pt``, evaluation run directories ``runs/k-s<s>/``
(``summary.json``, per-point ``examples.parquet``), analyses ``analysis/a-s<s>/``
(``analysis.json``, tables). Analyses label models by their key (``std``, ``at``, ...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VERDICTS = ("reproduced", "partly", "not reproduced", "inconclusive")


@dataclass
class Finding:
    """One claim's verdict, the numbers behind it and how it was computed.

    ``effect`` and ``interval`` (low, high) give the measured effect and its uncertainty when
    the judge computes them; ``seeds`` the training seeds it pooled; ``mechanism`` which
    mechanism holds behind the verdict (training health, plain vs adaptive attacks, what the
    heads decide), with the numbers that show it (:mod:`analysis.studies.mechanisms`).
    """

    claim: str
    verdict: str
    numbers: dict[str, Any]
    explanation: str
    effect: float | None = None
    interval: tuple[float, float] | None = None
    seeds: list[int] = field(default_factory=list)
    mechanism: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "claim": self.claim,
            "verdict": self.verdict,
            "numbers": self.numbers,
            "explanation": self.explanation,
        }
        if self.effect is not None:
            out["effect"] = self.effect
        if self.interval is not None:
            out["interval"] = [float(self.interval[0]), float(self.interval[1])]
        if self.seeds:
            out["seeds"] = list(self.seeds)
        if self.mechanism:
            out["mechanism"] = self.mechanism
        return out


@dataclass
class StudyContext:
    """Where a study's outputs live, handed to step builders and judges.

    ``seed`` is the first training seed and the default of every ``seed=None`` below, so a
    judge written for one seed keeps working; ``seeds`` lists them all. ``scale`` is the
    pipelines' ``Scale`` (``name``, ``dataset``, ``eps``, ``n_eval``, ...).
    """

    out: Path
    models_dir: Path
    scale: Any
    device: str
    seed: int = 0
    seeds: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self.out, self.models_dir = Path(self.out), Path(self.models_dir)
        self.seeds = tuple(self.seeds) or (self.seed,)
        self.seed = self.seeds[0]

    def _s(self, seed: int | None) -> int:
        return self.seed if seed is None else int(seed)

    def ckpt(self, key: str, seed: int | None = None) -> Path:
        """Checkpoint of model ``key`` trained with ``seed``."""
        return self.models_dir / f"{key}-s{self._s(seed)}" / "checkpoint.pt"

    def run_dir(self, key: str, seed: int | None = None) -> Path:
        """Evaluation run directory of model ``key``, training seed ``seed``."""
        return self.out / "runs" / f"{key}-s{self._s(seed)}"

    def run_dirs(self, key: str) -> list[Path]:
        """One run directory per training seed, in ``seeds`` order."""
        return [self.run_dir(key, s) for s in self.seeds]

    def summary(self, key: str, seed: int | None = None) -> dict[str, Any]:
        """``summary.json`` of a run directory."""
        return json.loads((self.run_dir(key, seed) / "summary.json").read_text())

    def summaries(self, key: str) -> list[dict[str, Any]]:
        return [self.summary(key, s) for s in self.seeds]

    def examples_path(self, key: str, seed: int | None = None) -> Path:
        """Per-point results (``examples.parquet``: one row per test point and eps)."""
        return self.run_dir(key, seed) / "examples.parquet"

    def examples_paths(self, key: str) -> list[Path]:
        return [self.examples_path(key, s) for s in self.seeds]

    def analysis_dir(self, name: str, seed: int | None = None) -> Path:
        """Output folder of analysis ``name`` on the models of training seed ``seed``."""
        return self.out / "analysis" / f"{name}-s{self._s(seed)}"

    def analysis_dirs(self, name: str) -> list[Path]:
        return [self.analysis_dir(name, s) for s in self.seeds]


__all__ = ["VERDICTS", "Finding", "StudyContext"]
