"""``pkg.module:factory`` and ``path/to/file.py:factory``: building a model from user code.

This *runs the user's code* (importing the module executes it): it is the explicit way to bring
an architecture evalkit does not have. evalkit never imports a factory named inside a
checkpoint file; the user must type it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import torch.nn as nn

from evalkit.errors import EvalkitError

_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def is_factory_spec(spec: str) -> bool:
    """True for ``pkg.module:fn`` / ``file.py:fn`` (``fn`` may be dotted: ``Class.build``)."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not _DOTTED.match(attr):
        return False
    return target.endswith(".py") or bool(_DOTTED.match(target))


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise EvalkitError(f"factory file not found: {path} (check the path before ':')")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"evalkit_user_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise EvalkitError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)  # let the file import its siblings
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - user code: report one line
        sys.modules.pop(name, None)
        raise EvalkitError(f"importing {path} failed: {type(exc).__name__}: {exc}") from None
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    return module


def _import_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise EvalkitError(
            f"cannot import module {name!r} ({exc}); install it or add its folder to PYTHONPATH"
        ) from None
    except Exception as exc:  # noqa: BLE001
        raise EvalkitError(f"importing {name} failed: {type(exc).__name__}: {exc}") from None


def build_from_factory(spec: str) -> nn.Module:
    """Import the module of ``spec``, call ``factory()`` with no arguments and return the
    ``nn.Module`` it builds. One-line :class:`EvalkitError` for every failure."""
    if not is_factory_spec(spec):
        raise EvalkitError(f"bad factory spec {spec!r}: use pkg.module:fn or path/to/file.py:fn")
    target, _, attr = spec.rpartition(":")
    module = _import_file(Path(target)) if target.endswith(".py") else _import_module(target)
    obj: object = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise EvalkitError(f"{target} has no attribute {attr!r} (check the name after ':')")
        obj = getattr(obj, part)
    if not callable(obj):
        raise EvalkitError(f"{spec} is not callable; it must be a function returning nn.Module")
    try:
        model = obj()
    except Exception as exc:  # noqa: BLE001 - user code
        raise EvalkitError(f"{spec}() failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise EvalkitError(f"{spec}() returned {type(model).__name__}, not a torch nn.Module")
    return model
