"""Refusing ``torch.export`` archives (``.pt2``) that would unpickle Python objects.

``torch.export.load`` reads weights and constants stored "with pickle" through
``torch.load(weights_only=False)`` / ``pickle.loads`` (its docstring: never load untrusted
files), and runs AOTInductor shared libraries when an archive carries them. evalkit keeps its
pickle-free promise by auditing the zip *before* handing it to ``torch.export.load``:

* members listed as raw tensor bytes (``use_pickle: false`` in the payload configs) are data;
* members that are themselves ``torch.save`` zips must load with ``torch.load(weights_only=True)``
  (the same restricted unpickler evalkit uses for checkpoints);
* any other member that parses as a pickle naming a global (``GLOBAL``, ``STACK_GLOBAL``,
  ``INST``, ``EXT*``: the only ways a pickle can reach a callable) is refused, as are custom /
  opaque object constants and AOTInductor native code.

What passes holds only tensors, plain containers, JSON and text, so the ``weights_only=False``
reads inside ``torch.export.load`` see nothing that could run code.
"""

from __future__ import annotations

import io
import json
import pickle
import pickletools
import zipfile
from pathlib import Path

import torch

from evalkit.errors import CheckpointError

_RISKY_OPS = {"GLOBAL", "STACK_GLOBAL", "INST", "EXT1", "EXT2", "EXT4"}
_TENSOR_CONSTANT_PREFIX = "tensor_"  # torch.export's TENSOR_CONSTANT_FILENAME_PREFIX


def pickle_globals(data: bytes) -> list[str]:
    """Opcodes of the pickle stream ``data`` that reach a global (``["GLOBAL os system", ...]``).

    Scans up to the first malformed opcode: ``pickle.loads`` would have executed everything
    before it, so that prefix is what counts. Returns ``[]`` for non-pickle bytes.
    """
    found: list[str] = []
    try:
        for op, arg, _pos in pickletools.genops(io.BytesIO(data)):
            if op.name in _RISKY_OPS:
                found.append(f"{op.name} {arg}" if arg is not None else op.name)
    except Exception:  # noqa: BLE001 - malformed tail: keep what was seen
        pass
    return found


def _raw_payloads(zf: zipfile.ZipFile, names: list[str]) -> set[str]:
    """Members the payload configs declare as raw tensor bytes; refuses object constants."""
    raw: set[str] = set()
    for name in names:
        if not name.endswith("_config.json") or "/data/" not in f"/{name}":
            continue
        try:
            cfg = json.loads(zf.read(name))
        except ValueError:
            continue
        folder = name.rsplit("/", 1)[0]
        entries = cfg.get("config", {}) if isinstance(cfg, dict) else {}
        for fqn, entry in entries.items() if isinstance(entries, dict) else []:
            if not isinstance(entry, dict):
                continue
            path_name = str(entry.get("path_name", ""))
            if "constants" in folder and not path_name.startswith(_TENSOR_CONSTANT_PREFIX):
                raise CheckpointError(
                    f"refused: constant {fqn!r} is a pickled Python object ({path_name}), which "
                    "could run code; re-export without custom objects"
                )
            if not entry.get("use_pickle", False):
                raw.add(f"{folder}/{path_name}")
    return raw


def audit_export_archive(path: str | Path) -> None:
    """Raise :class:`CheckpointError` (one line, naming the member) unless the ``.pt2`` archive
    at ``path`` holds only tensors, plain values, JSON and text (see module docstring)."""
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"cannot read {path}: not a torch.export archive ({exc})") from None
    with zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        for name in names:
            if "/aotinductor/" in f"/{name}" or name.endswith((".so", ".dll", ".dylib")):
                raise CheckpointError(
                    f"refused to load {path}: it carries compiled native code ({name}); export "
                    "with torch.export.save (no AOTInductor package)"
                )
        raw = _raw_payloads(zf, names)
        for name in names:
            if name in raw:
                continue
            data = zf.read(name)
            if data[:4] == b"PK\x03\x04":
                try:
                    torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
                except pickle.UnpicklingError:
                    raise CheckpointError(
                        f"refused to load {path}: member {name} holds Python objects other than "
                        "tensors, which could run code"
                    ) from None
                except Exception as exc:  # noqa: BLE001
                    raise CheckpointError(
                        f"cannot read {path}: member {name} is corrupt ({str(exc)[:120]})"
                    ) from None
                continue
            risky = pickle_globals(data)
            if risky:
                raise CheckpointError(
                    f"refused to load {path}: member {name} is a pickle that imports "
                    f"{risky[0][:80]}, which could run code"
                )
