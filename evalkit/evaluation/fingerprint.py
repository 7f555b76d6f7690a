"""Content fingerprints: what a run directory's results are bound to.

A result may only be reused (``--resume``, a study step) when the bytes that produced it are the
same, not merely the path: trainers rewrite ``checkpoint.pt`` every epoch and users overwrite
data files. Fingerprints are sha256 hex digests of

* a file's bytes (:func:`file_sha256`), for checkpoints and data files;
* a model's parameters and buffers in ``state_dict`` order, names and dtypes included
  (:func:`module_sha256`), so any ``nn.Module`` built in Python is covered too;
* evaluation tensors ``x`` and ``y`` (:func:`tensors_sha256`);
* the code that computes results (:func:`source_sha256`): evalkit's and its analyses' Python
  sources, so a study step computed by other code is never reused as if it were current.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path

import torch
import torch.nn as nn

_CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _update(h: hashlib._Hash, t: torch.Tensor) -> None:
    t = t.detach().to("cpu").contiguous()
    h.update(f"{tuple(t.shape)}|{t.dtype}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def module_sha256(model: nn.Module) -> str:
    """sha256 over a module's class name and every state_dict entry (name, shape, dtype, bytes)."""
    h = hashlib.sha256(type(model).__name__.encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        if isinstance(t, torch.Tensor):
            _update(h, t)
    return h.hexdigest()


def tensors_sha256(*tensors: torch.Tensor) -> str:
    """sha256 over tensors' shapes, dtypes and bytes, in order."""
    h = hashlib.sha256()
    for t in tensors:
        _update(h, t)
    return h.hexdigest()


# orchestration that decides which steps run (their arguments are keyed separately) and judges
# their results afresh on every run; it computes no step's result, so editing it reuses them
NOT_STEP_CODE = (
    # The CLI: steps call the Python API and the library never imports the CLI
    # (tests/test_import_graph.py), so help text and flag parsing cannot change a step's result.
    "evalkit/cli.py",
    "evalkit/commands/",
    "evalkit/pipelines/studies/runner.py",
    "evalkit/pipelines/studies/catalog.py",
    "evalkit/pipelines/studies/spec.py",
    "evalkit/pipelines/studies/__init__.py",
    "analysis/studies/",
)


@functools.cache
def source_sha256(
    packages: tuple[str, ...] = ("evalkit", "analysis"), exclude: tuple[str, ...] = NOT_STEP_CODE
) -> str:
    """sha256 over every ``.py`` file (path relative to the package's parent, and bytes, sorted)
    of the installed ``packages``, leaving out paths that start with an ``exclude`` entry;
    computed once per process. A package that cannot be found counts by name, so the digest
    still changes if it appears later."""
    h = hashlib.sha256()
    for name in packages:
        spec = importlib.util.find_spec(name)
        roots = list(spec.submodule_search_locations or []) if spec else []
        h.update(f"package:{name}:{len(roots)}|".encode())
        for root in map(Path, roots):
            for f in sorted(root.rglob("*.py")):
                rel = f"{name}/{f.relative_to(root).as_posix()}"
                if rel.startswith(exclude):
                    continue
                h.update(f"{rel}|".encode())
                h.update(f.read_bytes())
    return h.hexdigest()
