"""Device selection shared by every command."""

from __future__ import annotations

import torch

from evalkit.errors import EvalkitError


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """Turn ``auto|cpu|cuda|cuda:N`` into a device, failing clearly when CUDA is absent."""
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise EvalkitError(
                "--device cuda was asked for but no CUDA GPU is visible (use --device cpu or auto)"
            )
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise EvalkitError(f"unknown device {name!r} (use auto, cpu or cuda)")
