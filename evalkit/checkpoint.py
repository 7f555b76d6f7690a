"""Self-describing checkpoints.

One ``.pt`` file holding only tensors and plain values, read with
``torch.load(weights_only=True)`` so a hostile pickle is refused without running anything.
It records everything needed to rebuild the (defended) model: ``evalkit attack --ckpt x.pt``
needs no other flag. A plain foreign ``state_dict`` loads with ``arch``/``dataset`` given.
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
from evalkit.defenses import apply_defenses, parse_spec
from evalkit.errors import CheckpointError
from evalkit.models import build_model
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
        }


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    dataset: str,
    input_size: int,
    defense: str,
    defense_params: dict[str, Any] | None = None,
    train_config: dict[str, Any] | None = None,
    history: list[dict[str, Any]] | None = None,
    epoch: int | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write a self-describing checkpoint atomically. ``extra`` holds resume state
    (optimizer, scheduler, RNG), which must itself be tensors and plain values."""
    cfg = getattr(model, "arch_config", None)
    if not cfg:
        raise CheckpointError(
            "model was not built with evalkit.models.build_model; cannot describe it"
        )
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "evalkit_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "arch": cfg["arch"],
        "arch_kwargs": dict(cfg["arch_kwargs"]),
        "num_classes": int(cfg["num_classes"]),
        "in_channels": int(cfg["in_channels"]),
        "input_size": int(input_size),
        "mean": [float(v) for v in cfg["mean"]],
        "std": [float(v) for v in cfg["std"]],
        "defense": str(defense),
        "defense_params": dict(defense_params or {}),
        "dataset": dataset,
        "train_config": dict(train_config or {}),
        "history": list(history or []),
        "epoch": epoch,
        "state_dict": state,
    }
    if extra:
        payload["extra"] = extra
    atomic_torch_save(path, payload)


def read_checkpoint_file(path: str | Path) -> Any:
    """``torch.load(weights_only=True)`` with one-line errors for every way it can fail."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path} (check the --ckpt path)")
    if path.is_dir():
        cand = path / "checkpoint.pt"
        if cand.exists():
            path = cand
        else:
            raise CheckpointError(
                f"{path} is a directory without checkpoint.pt (pass the .pt file)"
            )
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


def _unwrap_state_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    """Find a state_dict in common foreign layouts ({'state_dict': ...}, DataParallel prefixes)."""
    if not isinstance(obj, dict):
        return None
    for key in ("state_dict", "model_state_dict", "model", "net"):
        if key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        return None
    out = {}
    for k, v in obj.items():
        for prefix in ("module.", "model.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix) :]
        out[k] = v
    return out


def adapt_foreign_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop parameters some repositories carry but never use (TRADES WRN's ``sub_block1``)."""
    return {k: v for k, v in sd.items() if not k.startswith("sub_block1.")}


def read_meta(obj: Any, path: str | Path | None = None) -> CheckpointMeta:
    """Validate an evalkit checkpoint dict and return its metadata."""
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an evalkit checkpoint")
    version = obj.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {version!r}; this evalkit reads up to {FORMAT_VERSION} (upgrade evalkit)"
        )
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
    )


def load_model(
    path: str | Path,
    *,
    arch: str | None = None,
    dataset: str | None = None,
    normalize: tuple[list[float], list[float]] | None = None,
    defense: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
) -> tuple[nn.Module, CheckpointMeta]:
    """Load a checkpoint (evalkit's own, or a foreign state_dict with ``arch`` + ``dataset``).

    ``defense`` adds test-time plugins such as ``sap`` on top of what the checkpoint records.
    The returned model is in eval mode on ``device``.
    """
    obj = read_checkpoint_file(path)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        meta = read_meta(obj, path)
        state = obj["state_dict"]
        if normalize is not None:
            meta.mean, meta.std = list(normalize[0]), list(normalize[1])
    else:
        state = _unwrap_state_dict(obj)
        if state is None:
            raise CheckpointError(
                f"{path} holds neither an evalkit checkpoint nor a state_dict of tensors"
            )
        if not arch or not dataset:
            raise CheckpointError(
                f"{path} is a plain state_dict without metadata: pass --arch and --dataset "
                "(and --normalize MEAN,STD if the model expects normalized input)"
            )
        state = adapt_foreign_state_dict(state)
        info = dataset_info(dataset)
        mean, std = (
            normalize
            if normalize is not None
            else ([0.0] * info.in_channels, [1.0] * info.in_channels)
        )
        meta = CheckpointMeta(
            arch=arch,
            num_classes=_infer_classes(state, info.num_classes),
            in_channels=info.in_channels,
            input_size=info.input_size,
            mean=list(mean),
            std=list(std),
            dataset=dataset,
            foreign=True,
            arch_kwargs=dict(arch_kwargs or {}),
            path=str(path),
        )
    spec = parse_spec(meta.defense, meta.defense_params)
    if defense:
        for name in parse_spec(defense).plugins:
            spec = spec.with_plugin(name)
    model = build_model(
        meta.arch,
        num_classes=meta.num_classes,
        in_channels=meta.in_channels,
        mean=meta.mean,
        std=meta.std,
        **meta.arch_kwargs,
    )
    model = apply_defenses(model, spec)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch
        line = next(
            (ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln),
            str(exc).splitlines()[0],
        )
        raise CheckpointError(
            f"{path} does not match arch {meta.arch!r}: {line[:200]} (check --arch/--dataset)"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        parts = []
        if result.missing_keys:
            parts.append(f"missing {len(result.missing_keys)} keys (e.g. {result.missing_keys[0]})")
        if result.unexpected_keys:
            parts.append(
                f"unexpected {len(result.unexpected_keys)} keys (e.g. {result.unexpected_keys[0]})"
            )
        raise CheckpointError(
            f"{path} does not match arch {meta.arch!r} with defense {spec}: " + "; ".join(parts)
        )
    meta.defense = str(spec)
    return model.to(device).eval(), meta


def _infer_classes(state: dict[str, torch.Tensor], default: int) -> int:
    for key in ("linear.weight", "fc.weight"):
        if key in state and state[key].ndim == 2:
            return int(state[key].shape[0])
    return default
