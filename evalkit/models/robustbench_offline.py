"""RobustBench models, loaded offline from RobustBench's on-disk layout (never downloaded).

Spec: ``robustbench:DATASET/THREAT/NAME`` (``robustbench:cifar10/Linf/Standard``), or
``robustbench:NAME`` for RobustBench's defaults ``cifar10``/``Linf``. The weights file is where
``robustbench.utils.load_model`` keeps it::

    <model_dir>/<dataset>/<threat>/<NAME>.pt        (model_dir defaults to ./models)

so a folder filled by RobustBench on another machine can be copied here as is. A missing file
is a one-line error naming it; nothing is fetched. The file is read with
``torch.load(weights_only=True)`` (RobustBench's own loader unpickles freely).

The ``robustbench`` package is not installable from this project's package index, so the
architecture comes from, in order:

1. ``factory="pkg.module:fn"`` (any callable returning the ``nn.Module``) or ``arch=NAME`` (an
   evalkit architecture with the same ``state_dict`` layout);
2. :data:`KNOWN`: RobustBench entries whose architecture is RobustBench's plain WideResNet (the
   TRADES layout ``conv1``/``block1..3.layer.N``/``bn1``/``fc``, no input normalization), which
   evalkit's ``wrn28_10``/``wrn34_10`` reproduce key for key (``sub_block1`` is dropped on load);
3. the installed ``robustbench`` package's model zoo, when it imports (only its constructors
   are used, never its loader).

Otherwise: a one-line error asking for ``arch=`` or ``factory=``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.nn as nn

from evalkit.errors import EvalkitError

DATASETS = ("cifar10", "cifar100", "imagenet")
THREATS = {"linf": "Linf", "l2": "L2", "corruptions": "corruptions"}
DEFAULT_MODEL_DIR = "./models"

_WRN28 = ("wrn28_10", {})
_WRN34 = ("wrn34_10", {})
#: (dataset, threat, name) -> (evalkit arch, arch kwargs); depth/width read from RobustBench's
#: model zoo (all ``WideResNet(depth, widen_factor=10)`` in the TRADES layout).
KNOWN: dict[tuple[str, str, str], tuple[str, dict[str, Any]]] = {
    ("cifar10", "Linf", "Standard"): _WRN28,
    ("cifar10", "L2", "Standard"): _WRN28,
    ("cifar10", "corruptions", "Standard"): _WRN28,
    ("cifar10", "Linf", "Carmon2019Unlabeled"): _WRN28,
    ("cifar10", "Linf", "Sehwag2020Hydra"): _WRN28,
    ("cifar10", "Linf", "Wang2020Improving"): _WRN28,
    ("cifar10", "Linf", "Wu2020Adversarial_extra"): _WRN28,
    ("cifar10", "Linf", "Zhang2020Geometry"): _WRN28,
    ("cifar10", "Linf", "Zhang2019Theoretically"): _WRN34,
    ("cifar10", "Linf", "Zhang2019You"): _WRN34,
    ("cifar10", "Linf", "Zhang2020Attacks"): _WRN34,
    ("cifar10", "Linf", "Huang2020Self"): _WRN34,
    ("cifar10", "Linf", "Wu2020Adversarial"): _WRN34,
    ("cifar10", "Linf", "Sitawarin2020Improving"): _WRN34,
    ("cifar10", "Linf", "Cui2020Learnable_34_10"): _WRN34,
    ("cifar10", "L2", "Wu2020Adversarial"): _WRN34,
    ("cifar100", "Linf", "Addepalli2022Efficient_WRN_34_10"): _WRN34,
}


@dataclass(frozen=True)
class RobustBenchRef:
    """One RobustBench entry and where its weights live."""

    dataset: str
    threat: str
    name: str
    model_dir: Path

    @property
    def folder(self) -> Path:
        return self.model_dir / self.dataset / self.threat

    @property
    def weights(self) -> Path:
        return self.folder / f"{self.name}.pt"

    def __str__(self) -> str:
        return f"robustbench:{self.dataset}/{self.threat}/{self.name}"


def parse_robustbench(spec: str, model_dir: str | Path | None = None) -> RobustBenchRef:
    """``robustbench:cifar10/Linf/Standard`` -> :class:`RobustBenchRef` (one-line errors)."""
    body = spec.split(":", 1)[1] if spec.lower().startswith("robustbench:") else spec
    parts = [p for p in body.strip().split("/") if p]
    if len(parts) == 1:
        parts = ["cifar10", "Linf", parts[0]]
    if len(parts) != 3:
        raise EvalkitError(
            f"bad RobustBench spec {spec!r}: use robustbench:DATASET/THREAT/NAME, "
            "e.g. robustbench:cifar10/Linf/Standard"
        )
    dataset, threat, name = parts
    if dataset.lower() not in DATASETS:
        raise EvalkitError(
            f"unknown RobustBench dataset {dataset!r} (known: {', '.join(DATASETS)})"
        )
    if threat.lower() not in THREATS:
        raise EvalkitError(
            f"unknown RobustBench threat model {threat!r} (known: {', '.join(THREATS.values())})"
        )
    return RobustBenchRef(
        dataset.lower(), THREATS[threat.lower()], name, Path(model_dir or DEFAULT_MODEL_DIR)
    )


def require_weights(ref: RobustBenchRef) -> Path:
    """The weights path, or a one-line error naming the file and folder to fill."""
    if not ref.weights.is_file():
        raise EvalkitError(
            f"{ref}: weights not found at {ref.weights.absolute()}; evalkit never downloads: "
            f"copy {ref.name}.pt (from a machine where RobustBench fetched it) into "
            f"{ref.folder.absolute()}/ or point model_dir at the folder holding "
            "<dataset>/<threat>/"
        )
    return ref.weights


def zoo_constructor(ref: RobustBenchRef) -> nn.Module | None:
    """The architecture from the installed ``robustbench`` package's model zoo, or None when
    the package (or the entry) is not there. Only the constructor is called."""
    try:
        from robustbench.model_zoo import model_dicts  # type: ignore[import-not-found]
        from robustbench.model_zoo.enums import (  # type: ignore[import-not-found]
            BenchmarkDataset,
            ThreatModel,
        )
    except Exception:  # noqa: BLE001 - absent or broken install: fall back to our table
        return None
    try:
        entry = model_dicts[BenchmarkDataset(ref.dataset)][ThreatModel(ref.threat)][ref.name]
        return entry["model"]()
    except Exception:  # noqa: BLE001
        return None
