"""Turning what a user hands :func:`evalkit.evaluate` into a model and examples.

Models: any ``nn.Module`` (logits out, inputs in [0, 1]), or a path / spec string loaded by
:func:`evalkit.models.sources.load_any` (evalkit checkpoints, plain state_dicts with ``arch``,
TorchScript, ``torch.export``, safetensors, ``pkg.module:factory``, ``robustbench:...``).
Data: ``(x, y)`` tensors, an ``ArraySplit``, a ``DataLoader``/iterable of ``(x, y)`` batches, a
``.npz``/``.pt`` file, a registered dataset name (test split), or None for the checkpoint's own
dataset. Errors are one line (:class:`~evalkit.errors.EvalkitError`) and name parameters, not
command-line flags.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from evalkit.checkpoint.progress import training_complete
from evalkit.data import ArraySplit, dataset_info, load_array_file, load_split
from evalkit.errors import DataError, EvalkitError
from evalkit.evaluation.engine import TensorExamples
from evalkit.evaluation.fingerprint import file_sha256, module_sha256, tensors_sha256
from evalkit.evaluation.source import ModelSource
from evalkit.models.wrap import check_outputs
from evalkit.utils.mode import model_mode


@dataclass
class ModelInput:
    """A loaded model and what is known about it."""

    model: nn.Module
    description: dict[str, Any]
    num_classes: int | None = None
    input_shape: tuple[int, ...] | None = None
    dataset: str | None = None
    class_names: tuple[str, ...] = ()
    checkpoint_path: str | None = None
    defense_params: dict[str, Any] = field(default_factory=dict)
    unfinished: str | None = None  # why the training run looks unfinished, if it does


@dataclass
class DataInput:
    """Examples to evaluate and where they came from."""

    examples: TensorExamples
    source: str
    file_path: str | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.examples.x.shape[1:])


def resolve_model(
    model: nn.Module | str | Path, source: ModelSource, *, device: torch.device
) -> ModelInput:
    """Load or adopt ``model`` as ``source`` says (:class:`ModelSource`) and describe it (see
    the module docstring). A folder given as the model (or as ``source.weights``) is resolved
    to the one checkpoint file inside (printed) or refused; ``source.weights_set`` picks
    ``"ema"``/``"raw"`` weights of a file holding both. Defense parts that apply to any model
    (input transformations, ``bpda``; :mod:`evalkit.defenses.transforms`) are applied after
    loading, to whatever was loaded."""
    from evalkit.defenses.transforms import apply_after_load, split_spec

    weights, arch, dataset = source.weights, source.arch, source.dataset
    normalize, force_normalize, output = source.normalize, source.force_normalize, source.output
    model_dir, weights_set = source.model_dir, source.weights_set
    defense, params, after, after_params = split_spec(source.defense, source.params)
    if isinstance(model, nn.Module):
        if defense:
            from evalkit.defenses import apply_defenses, parse_spec

            model = apply_defenses(model, parse_spec(defense, params or {}))
        if output not in ("auto", None):
            from evalkit.models.wrap import wrap

            model = wrap(model, output=output)
        named = "+".join([*([defense] if defense else []), *after]) or None
        return ModelInput(
            apply_after_load(model, after, after_params).to(device),
            {"arch": type(model).__name__, "source": "python module", "defense": named},
            defense_params=after_params,
        )
    if not isinstance(model, (str, Path)):
        raise EvalkitError(
            f"model must be an nn.Module or a path/spec string, not {type(model).__name__}"
        )
    from evalkit.checkpoint_files import resolve_checkpoint_path, weights_set_choice
    from evalkit.models.sources import load_any

    if isinstance(model, (str, Path)) and Path(str(model)).is_dir():
        model = resolve_checkpoint_path(model)
    if weights is not None and Path(str(weights)).is_dir():
        weights = resolve_checkpoint_path(weights)
    spec = str(model)
    is_factory = ":" in spec and not Path(spec).exists() and not spec.startswith("robustbench:")
    if weights is not None and not is_factory:
        raise EvalkitError(
            "weights go with a factory model spec (pkg.module:factory or file.py:factory); "
            f"{spec} already holds its weights"
        )
    with weights_set_choice(weights_set):  # every model source's loader sees the choice
        net, meta = load_any(
            spec,
            ckpt=weights,
            arch=arch,
            dataset=dataset,
            normalize=normalize,
            force_normalize=force_normalize,
            output=output,
            defense=defense,
            params=params or None,
            model_dir=model_dir,
            device=device,
        )
    desc = meta.describe()
    desc["weights_set"] = weights_set
    if after:
        net = apply_after_load(net, after, after_params).to(device)
        base = str(desc.get("defense") or "standard")
        desc["defense"] = "+".join([*([base] if base != "standard" else []), *after])
        desc["defense_params"] = {**dict(desc.get("defense_params") or {}), **after_params}
    ds = desc.get("dataset")
    names: tuple[str, ...] = ()
    if ds:
        try:
            names = tuple(dataset_info(ds).class_names)
        except EvalkitError:
            names = ()
    shape = desc.get("input_shape")
    if shape is None and desc.get("in_channels") and desc.get("input_size"):
        shape = (desc["in_channels"], desc["input_size"], desc["input_size"])
    file = Path(str(weights)) if weights is not None else Path(spec)
    unfinished = None
    if not training_complete(desc):
        cfg = desc.get("train_config") or {}
        unfinished = f"epoch {desc.get('epoch')} of {cfg.get('epochs')}"
    return ModelInput(
        net,
        desc,
        num_classes=desc.get("num_classes"),
        input_shape=tuple(shape) if shape else None,
        dataset=ds,
        class_names=names,
        checkpoint_path=str(file) if file.is_file() else None,
        defense_params=dict(desc.get("defense_params") or {}),
        unfinished=unfinished,
    )


def _from_batches(batches: Any, n: int | None) -> ArraySplit:
    xs, ys, have = [], [], 0
    for item in batches:
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise DataError("data batches must be (x, y) pairs")
        xs.append(torch.as_tensor(item[0]))
        ys.append(torch.as_tensor(item[1]))
        have += len(ys[-1])
        if n is not None and have >= n:
            break
    if not xs:
        raise DataError("the data loader yielded no batches")
    return ArraySplit(torch.cat(xs), torch.cat(ys).long())


def resolve_data(
    data: Any,
    *,
    dataset: str | None,
    n: int | None,
    data_root: str | Path | None = None,
    download: bool = False,
) -> DataInput:
    """Examples from any supported ``data`` (see the module docstring); first ``n`` only."""
    file_path = None
    if data is None:
        if not dataset:
            raise DataError("no data: pass data=(x, y), a .npz/.pt file or a dataset name")
        split, source = load_split(dataset, "test", root=data_root, download=download), dataset
    elif isinstance(data, ArraySplit):
        split, source = data, "arrays"
    elif isinstance(data, (tuple, list)) and len(data) == 2 and torch.is_tensor(data[0]):
        y = torch.as_tensor(data[1])
        if y.dtype.is_floating_point:
            raise DataError("labels y must be integer class indices, not floats")
        split, source = ArraySplit(torch.as_tensor(data[0]), y.long()), "tensors"
    elif isinstance(data, (str, Path)):
        path = Path(data)
        if path.suffix in (".npz", ".pt") or path.exists():
            if not path.is_file():
                raise DataError(f"data file not found: {path} (check the path)")
            split, source, file_path = load_array_file(path), str(path), str(path)
        else:
            split = load_split(str(data), "test", root=data_root, download=download)
            source = str(data)
    elif hasattr(data, "__iter__"):
        split, source = _from_batches(data, n), "data loader"
    else:
        raise DataError(
            f"cannot use data of type {type(data).__name__}: pass (x, y) tensors, a DataLoader, "
            "a .npz/.pt path or a dataset name"
        )
    if n is not None and n > len(split):
        raise DataError(
            f"n={n} but the data holds {len(split)} examples (pass n <= {len(split)}, or leave "
            "n out to evaluate all of them)"
        )
    split = split.first(n)
    if len(split) == 0:
        raise DataError("no examples to evaluate (check n and the data)")
    x = split.x
    if x.dtype != torch.uint8:
        x = x.float()
        lo, hi = float(x.min()), float(x.max())
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0 or hi > 1:
            raise DataError(
                f"images must be in [0, 1] (found values in [{lo:.3g}, {hi:.3g}]): evalkit "
                "attacks in pixel space; put normalization inside the model (evalkit.wrap)"
            )
    return DataInput(TensorExamples(x, split.y.long()), source, file_path)


def check_shape(m: ModelInput, d: DataInput) -> None:
    """Images must have the model's shape (when the model says what it is)."""
    if m.input_shape is not None and tuple(d.shape) != tuple(m.input_shape):
        raise DataError(
            f"data images are {tuple(d.shape)} (C,H,W) but the model expects "
            f"{tuple(m.input_shape)} (pick matching data or dataset)"
        )


def check_match(m: ModelInput, d: DataInput, num_classes: int) -> None:
    """Images must have the model's shape and labels its class range."""
    check_shape(m, d)
    y = d.examples.y
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise DataError(
            f"labels range {int(y.min())}..{int(y.max())} but the model has {num_classes} classes"
        )


def count_classes(model: nn.Module, x: torch.Tensor) -> int:
    """Classes from the model's output on a probe batch; checks that it returns logits."""
    try:  # eval: no BatchNorm statistics updated by the probe; each module's mode given back
        with model_mode(model, False), torch.no_grad():
            out = model(x)
    except EvalkitError:
        raise
    except Exception as exc:  # noqa: BLE001 - a user model failing on user data: say so in one line
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise EvalkitError(
            f"the model failed on the data ({type(exc).__name__}: {first}); check that the "
            f"images (a batch of shape {tuple(x.shape)}) match the model's input"
        ) from None
    with model_mode(model, False), torch.no_grad():
        check_outputs(model, x)
    if not torch.is_tensor(out) or out.ndim != 2:
        raise EvalkitError(
            "the model must return logits of shape (N, classes); wrap tuple/dict outputs with "
            "evalkit.wrap(model, output=...)"
        )
    k = int(out.shape[1])
    if k < 2:
        raise EvalkitError(f"the model returns {k} logit per input; a classifier needs >= 2")
    return k


def fingerprints(m: ModelInput, d: DataInput) -> dict[str, str | None]:
    """Content hashes binding a run to its model and data (see :mod:`.fingerprint`)."""
    return {
        "model_sha256": module_sha256(m.model),
        "checkpoint_sha256": file_sha256(m.checkpoint_path) if m.checkpoint_path else None,
        "data_sha256": tensors_sha256(d.examples.x, d.examples.y),
        "data_file_sha256": file_sha256(d.file_path) if d.file_path else None,
    }
