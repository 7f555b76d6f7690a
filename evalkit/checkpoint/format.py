"""The checkpoint file format and its safety: what an evalkit ``.pt`` holds, how it is written
(atomically, tensors and plain values only) and read (``torch.load(weights_only=True)``, so a
hostile pickle is refused without running anything), and its metadata validated.

Turning the weights into a model is :mod:`evalkit.checkpoint.build`; making a foreign
state_dict's keys fit is :mod:`evalkit.checkpoint.state_dict`.
"""

from __future__ import annotations

import datetime as _dt
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from evalkit import __version__
from evalkit.data.registry import dataset_info
from evalkit.errors import CheckpointError
from evalkit.models.wrap import WrappedModel
from evalkit.utils.io import atomic_torch_save

FORMAT = "evalkit-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = (
    "arch",
    "num_classes",
    "in_channels",
    "input_size",
    "mean",
    "std",
    "defense",
    "state_dict",
)
#: ``model_kind`` of a checkpoint whose module was not built by :func:`build_model`.
EXTERNAL = "external"


@dataclass
class CheckpointMeta:
    """What a checkpoint says about its model (everything but the weights)."""

    arch: str
    num_classes: int
    in_channels: int
    input_size: int
    mean: list[float]
    std: list[float]
    defense: str = "standard"
    defense_params: dict[str, Any] = field(default_factory=dict)
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    dataset: str | None = None
    train_config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    epoch: int | None = None
    foreign: bool = False
    path: str | None = None
    health: dict[str, Any] | None = None  # training health of a plug-in defense, last epoch

    def describe(self) -> dict[str, Any]:
        """Plain-JSON summary for run directories and reports."""
        return {
            "arch": self.arch,
            "arch_kwargs": self.arch_kwargs,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "input_size": self.input_size,
            "mean": self.mean,
            "std": self.std,
            "defense": self.defense,
            "defense_params": self.defense_params,
            "dataset": self.dataset,
            "epoch": self.epoch,
            "foreign": self.foreign,
            "path": self.path,
            "train_config": self.train_config,
            "history": self.history,
            "health": self.health,
        }


# --------------------------------------------------------------------------------------- save


def bare_module(model: nn.Module) -> nn.Module:
    """``model`` without DataParallel/DDP (``.module``) and ``torch.compile`` (``._orig_mod``)
    wrappers, in any nesting, so saved keys carry no wrapper prefix."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod  # type: ignore[assignment]
        else:
            return model


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    dataset: str | None = None,
    input_size: int | None = None,
    defense: str = "standard",
    defense_params: dict[str, Any] | None = None,
    train_config: dict[str, Any] | None = None,
    history: list[dict[str, Any]] | None = None,
    epoch: int | None = None,
    extra: dict[str, Any] | None = None,
    health: dict[str, Any] | None = None,
    factory: str | None = None,
    num_classes: int | None = None,
    in_channels: int | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
) -> None:
    """Write a checkpoint atomically, for any ``nn.Module``.

    A model from :func:`evalkit.models.build_model` (possibly defended, DDP-wrapped or compiled)
    gives a self-describing checkpoint; ``input_size`` defaults to ``dataset``'s. Any other
    module gives an *external* checkpoint: ``state_dict`` plus ``factory`` (the
    ``pkg.module:fn`` that rebuilds it; recorded as a note, never imported on load),
    ``num_classes``/``in_channels``/``input_size``/``mean``/``std``/``dataset`` when given, and
    the module's class name; a :func:`~evalkit.models.wrap.wrap` wrapper is recorded as its
    normalization and output mode and the inner module is saved. ``extra`` holds resume state (optimizer, scheduler), which must
    itself be tensors and plain values.
    """
    model = bare_module(model)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if input_size is None and dataset:
        input_size = dataset_info(dataset).input_size
    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "evalkit_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "defense": str(defense),
        "defense_params": dict(defense_params or {}),
        "dataset": dataset,
        "train_config": dict(train_config or {}),
        "history": list(history or []),
        "epoch": epoch,
    }
    if health is not None:  # plug-in defenses: the last epoch's training health
        payload["health"] = dict(health)
    cfg = getattr(model, "arch_config", None)
    if cfg:
        if input_size is None:
            raise CheckpointError("save_checkpoint needs input_size or dataset")
        payload.update(
            arch=cfg["arch"],
            arch_kwargs=dict(cfg["arch_kwargs"]),
            num_classes=int(cfg["num_classes"]),
            in_channels=int(cfg["in_channels"]),
            input_size=int(input_size),
            mean=[float(v) for v in cfg["mean"]],
            std=[float(v) for v in cfg["std"]],
        )
    else:
        output = None
        if isinstance(model, WrappedModel):  # record the wrapper, save the inner module
            if model.norm_values is not None and mean is None:
                mean, std = model.norm_values
            output = None if model.output in ("auto", "logits") else model.output
            model = bare_module(model.model)
            state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        cls = type(model)
        payload.update(
            model_kind=EXTERNAL,
            factory=factory,
            module_class=f"{cls.__module__}.{cls.__qualname__}",
            num_classes=None if num_classes is None else int(num_classes),
            in_channels=None if in_channels is None else int(in_channels),
            input_size=None if input_size is None else int(input_size),
            mean=None if mean is None else [float(v) for v in mean],
            std=None if std is None else [float(v) for v in std],
            output=output,
            note=external_note(factory),
        )
    payload["state_dict"] = state
    if extra:
        payload["extra"] = extra
    atomic_torch_save(path, payload)


def external_note(factory: str | None) -> str:
    """How to load an external checkpoint (stored in it, shown on a refused load)."""
    how = factory or "pkg.module:factory"
    return (
        f"weights of a model built outside evalkit's registry: load with the same factory, "
        f"load_any({how!r}, ckpt=<this file>) / --model {how} --ckpt <this file>"
    )


# --------------------------------------------------------------------------------------- read


def read_checkpoint_file(path: str | Path) -> Any:
    """``torch.load(weights_only=True)`` with one-line errors for every way it can fail."""
    from evalkit.checkpoint_files import resolve_checkpoint_path

    path = resolve_checkpoint_path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if "Unsupported global" in ln]
        what = f" ({lines[0][:120]})" if lines else ""
        raise CheckpointError(
            f"refused to load {path}: it holds objects other than tensors and plain values, which "
            f"could run code{what}; re-save it as a plain state_dict"
        ) from None
    except (EOFError, zipfile.BadZipFile, RuntimeError, ValueError, OSError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"cannot read {path}: corrupt or truncated file ({msg[:160]})"
        ) from None


def read_meta(obj: Any, path: str | Path | None = None) -> CheckpointMeta:
    """Validate an evalkit checkpoint dict and return its metadata."""
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an evalkit checkpoint")
    version = obj.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {version!r}; this evalkit reads up to {FORMAT_VERSION} (upgrade evalkit)"
        )
    if obj.get("model_kind") == EXTERNAL:
        raise CheckpointError(f"{path} holds {obj.get('note') or external_note(None)}")
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        raise CheckpointError(
            f"{path} is missing {', '.join(missing)} (re-save it with evalkit train)"
        )
    return CheckpointMeta(
        arch=str(obj["arch"]),
        num_classes=int(obj["num_classes"]),
        in_channels=int(obj["in_channels"]),
        input_size=int(obj["input_size"]),
        mean=list(obj["mean"]),
        std=list(obj["std"]),
        defense=str(obj["defense"]),
        defense_params=dict(obj.get("defense_params") or {}),
        arch_kwargs=dict(obj.get("arch_kwargs") or {}),
        dataset=obj.get("dataset"),
        train_config=dict(obj.get("train_config") or {}),
        history=list(obj.get("history") or []),
        epoch=obj.get("epoch"),
        path=str(path) if path else None,
        health=dict(obj["health"]) if isinstance(obj.get("health"), dict) else None,
    )
