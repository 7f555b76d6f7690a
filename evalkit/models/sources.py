"""One entry point for every way a model reaches evalkit: :func:`load_any`.

``spec`` is one of (tried in this order):

=============================  ==================================================================
``robustbench:DS/THREAT/NAME``  RobustBench entry, offline (:mod:`~evalkit.models.robustbench_offline`)
existing file ``*.safetensors``  a state_dict (optional extra: ``pip install 'evalkit[safetensors]'``)
                                 built with ``arch`` + ``dataset``
existing file, TorchScript zip   ``torch.jit.load`` (no Python unpickling; see below)
existing file ``*.pt2``          ``torch.export.load`` after :func:`audit_export_archive`
other existing file (``.pt``)    evalkit checkpoint, or a plain state_dict with ``arch`` +
                                 ``dataset`` (:func:`evalkit.checkpoint.load_model`)
``pkg.module:fn``/``f.py:fn``    ``fn()`` builds the module (user code runs); ``ckpt`` loads weights
=============================  ==================================================================

Every path is pickle-free: checkpoints and weights use ``torch.load(weights_only=True)`` or
safetensors; TorchScript archives are read by TorchScript's own loader, which restores only
tensors and TorchScript types, never arbitrary Python callables (the model's TorchScript code
does run when called: load only models you trust to *compute* honestly); ``.pt2`` archives
are audited before ``torch.export.load`` (which would otherwise unpickle).

After loading, every model is probed on 3 random images in ``[0, 1]``
(:func:`~evalkit.models.wrap.check_outputs`): NaN/inf weights or outputs, probability outputs,
tuple/dict outputs without an ``output=`` choice, and a class count other than
``num_classes`` are refused with one line. ``normalize=(mean, std)`` puts a
:class:`~evalkit.models.layers.Normalize` in front of models that expect normalized input.

Returns ``(model, meta)``: the model in eval mode on ``device``, and a plain-JSON dict
(:class:`SourceMeta`, whose keys also read as attributes) with
``source`` (one of :data:`SOURCE_KINDS`), ``spec``, ``path``, ``arch``, ``num_classes``,
``in_channels``, ``input_size``, ``input_shape``, ``mean``, ``std``, ``dataset``, ``defense``,
``foreign`` and ``note``. :func:`as_checkpoint_meta` turns it into a
:class:`~evalkit.checkpoint.CheckpointMeta` for code written against :func:`load_model`.
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from evalkit.checkpoint import (
    EXTERNAL,
    FORMAT,
    CheckpointMeta,
    check_finite,
    expand_normalization,
    load_weights_into,
    model_from_object,
    read_checkpoint_file,
    same_normalization,
    weights_of,
)
from evalkit.data.registry import DATASETS, dataset_info
from evalkit.errors import CheckpointError, EvalkitError
from evalkit.models.archive_audit import audit_export_archive
from evalkit.models.factory import build_from_factory, is_factory_spec
from evalkit.models.registry import build_model
from evalkit.models.robustbench_offline import (
    KNOWN,
    parse_robustbench,
    require_weights,
    zoo_constructor,
)
from evalkit.models.wrap import probe_model, wrap

SOURCE_KINDS = (
    "evalkit",
    "state_dict",
    "safetensors",
    "torchscript",
    "export",
    "factory",
    "robustbench",
)
SAFETENSORS_HINT = "pip install 'evalkit[safetensors]'"
PROBE_BATCH = 3
Normalization = tuple[Sequence[float], Sequence[float]]


# ------------------------------------------------------------------------------ file readers


def detect_kind(path: Path) -> str:
    """``safetensors``, ``torchscript``, ``export`` or ``checkpoint`` (``torch.save`` file),
    from the suffix and the zip members (TorchScript: ``*/code/`` + ``constants.pkl``;
    torch.export: ``archive_format``)."""
    if path.suffix.lower() == ".safetensors":
        return "safetensors"
    if path.suffix.lower() == ".pt2":
        return "export"
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
        if any(n.endswith("constants.pkl") for n in names) and any("/code/" in n for n in names):
            return "torchscript"
        if any(n.endswith("archive_format") for n in names):
            return "export"
    return "checkpoint"


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file as a CPU state_dict; one-line errors naming the fix."""
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise EvalkitError(
            f"{path} is a .safetensors file but the safetensors package is missing: "
            f"{SAFETENSORS_HINT}"
        ) from None
    if not Path(path).is_file():
        raise CheckpointError(f"weights not found: {path} (check the path)")
    try:
        return dict(load_file(str(path), device="cpu"))
    except Exception as exc:  # noqa: BLE001 - SafetensorError and friends
        msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read {path}: corrupt safetensors file ({msg})") from None


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, recorded)`` from a ``.safetensors`` file, an evalkit checkpoint (either
    kind) or a foreign ``.pt``; ``recorded`` holds what an evalkit checkpoint says about the
    module (``mean``, ``std``, ``in_channels``, ``input_size``, ``num_classes``, ``dataset``,
    ``factory``, ``output``, ``model_kind``), else ``{}``."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        return read_safetensors(path), {}
    obj = read_checkpoint_file(path)
    state = weights_of(obj, path)
    recorded: dict[str, Any] = {}
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        keys = ("mean", "std", "in_channels", "input_size", "num_classes", "dataset", "factory")
        recorded = {k: obj.get(k) for k in keys + ("output", "model_kind", "note")}
    return state, recorded


# ------------------------------------------------------------------------------- helpers


class SourceMeta(dict):
    """The plain-JSON meta dict of :func:`load_any`, also readable as attributes
    (``meta.num_classes``) like :class:`~evalkit.checkpoint.CheckpointMeta`."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def describe(self) -> dict[str, Any]:
        """A plain ``dict`` copy (JSON-ready)."""
        return dict(self)


class ExportedModule(nn.Module):
    """A ``torch.export`` program as an ``nn.Module``. The graph was captured in one mode
    (normally eval); ``train()``/``eval()`` only set the flag, they cannot change the graph."""

    def __init__(self, program: nn.Module) -> None:
        super().__init__()
        self.program = program

    def forward(self, x: torch.Tensor) -> Any:
        try:
            return self.program(x)
        except Exception as exc:  # noqa: BLE001 - name the usual cause: a fixed batch size
            if "Guard failed" not in str(exc):
                raise
            line = str(exc).strip().splitlines()[0][:120]
            raise EvalkitError(
                f"the torch.export program rejects input of shape {tuple(x.shape)} ({line}); "
                "re-export it with a dynamic batch: torch.export.export(model, (x,), "
                "dynamic_shapes={'x': {0: torch.export.Dim('batch')}})"
            ) from None

    def train(self, mode: bool = True) -> ExportedModule:
        self.training = mode
        return self


def _shape(
    input_shape: Sequence[int] | None, dataset: str | None, spec: str
) -> tuple[int, int, int]:
    if input_shape is not None:
        shape = tuple(int(v) for v in input_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise EvalkitError(f"input_shape must be (C, H, W), got {tuple(input_shape)}")
        return shape  # type: ignore[return-value]
    if dataset:
        info = dataset_info(dataset)
        return (info.in_channels, info.input_size, info.input_size)
    raise EvalkitError(
        f"{spec}: the input shape is unknown; pass --dataset NAME or input_shape=(C, H, W)"
    )


def _normalization(
    normalize: Normalization | None,
    recorded_mean: Sequence[float] | None,
    recorded_std: Sequence[float] | None,
    channels: int,
    source: str,
    force: bool,
) -> tuple[list[float], list[float]] | None:
    """The normalization to put in front: the given one, else the recorded one; a given one
    that differs from a recorded one is refused unless ``force``."""
    if recorded_mean is not None and recorded_std is not None:
        rec = [float(v) for v in recorded_mean], [float(v) for v in recorded_std]
        if normalize is None:
            return rec
        if not force and not same_normalization(([*normalize[0]], [*normalize[1]]), rec[0], rec[1]):
            raise CheckpointError(
                f"{source} records its own input normalization (mean={rec[0]}, std={rec[1]}); "
                "drop --normalize, or add --force-normalize to replace it"
            )
    if normalize is None:
        return None
    mean, std = expand_normalization(([*normalize[0]], [*normalize[1]]), channels)
    if len(mean) != channels or len(std) != channels:
        raise EvalkitError(
            f"normalization has {len(mean)} mean / {len(std)} std values for {channels} channels"
        )
    return mean, std


def _meta(
    source: str,
    spec: str,
    *,
    path: str | Path | None,
    shape: tuple[int, int, int],
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    c, h, w = shape
    out: dict[str, Any] = {
        "source": source,
        "spec": spec,
        "path": str(path) if path is not None else None,
        "arch": None,
        "arch_kwargs": {},
        "num_classes": None,
        "in_channels": c,
        "input_size": h if h == w else None,
        "input_shape": [c, h, w],
        "mean": [float(v) for v in mean] if mean is not None else [0.0] * c,
        "std": [float(v) for v in std] if std is not None else [1.0] * c,
        "dataset": None,
        "defense": "standard",
        "foreign": True,
        "defense_params": {},
        "train_config": {},
        "history": [],
        "epoch": None,
        "note": "",
    }
    out.update(extra)
    return out


# ------------------------------------------------------------------------------- loaders


def _from_checkpoint(spec: str, path: Path, obj: Any, kw: dict[str, Any], source: str):
    model, meta = model_from_object(
        obj,
        source=path,
        arch=kw["arch"],
        dataset=kw["dataset"],
        normalize=_as_lists(kw["normalize"]),
        defense=kw["defense"],
        arch_kwargs=kw["arch_kwargs"],
        device=kw["device"],
        force_normalize=kw["force_normalize"],
        num_classes=kw["num_classes"],
        params=kw["params"],
    )
    info = meta.describe()
    shape = (meta.in_channels, meta.input_size, meta.input_size)
    info.update(source=source, spec=spec, input_shape=list(shape), note="")
    return model, info


def _load_path(spec: str, path: Path, kw: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    kind = detect_kind(path)
    if kind == "checkpoint":
        obj = read_checkpoint_file(path)
        if isinstance(obj, dict) and obj.get("format") == FORMAT:
            return _from_checkpoint(spec, path, obj, kw, "evalkit")
        return _from_checkpoint(spec, path, obj, kw, "state_dict")
    if kind == "safetensors":
        return _from_checkpoint(spec, path, read_safetensors(path), kw, "safetensors")
    shape = _shape(kw["input_shape"], kw["dataset"], spec)
    if kind == "torchscript":
        try:
            with warnings.catch_warnings():  # "torch.jit.load is deprecated": still supported
                warnings.simplefilter("ignore", FutureWarning)
                model: nn.Module = torch.jit.load(str(path), map_location=kw["device"])
        except Exception as exc:  # noqa: BLE001
            msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
            raise CheckpointError(f"cannot read {path}: bad TorchScript archive ({msg})") from None
    else:
        model = _load_export(path, kw["device"])
    check_finite(model.state_dict(), path)
    norm = _normalization(kw["normalize"], None, None, shape[0], str(path), True)
    model = wrap(model, mean=norm[0], std=norm[1]) if norm else model
    meta = _meta(
        kind,
        spec,
        path=path,
        shape=shape,
        mean=norm[0] if norm else None,
        std=norm[1] if norm else None,
        dataset=kw["dataset"],
    )
    return model, meta


def _load_export(path: Path, device: torch.device | str) -> nn.Module:
    audit_export_archive(path)
    try:
        if path.suffix.lower() == ".pt2":
            program = torch.export.load(str(path))
        else:
            with open(path, "rb") as fh:
                program = torch.export.load(fh)
    except Exception as exc:  # noqa: BLE001
        msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read {path}: bad torch.export archive ({msg})") from None
    if torch.device(device).type != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, torch.device(device))
    return ExportedModule(program.module())


def _load_factory(spec: str, kw: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    model = build_from_factory(spec)
    recorded: dict[str, Any] = {}
    note = ""
    if kw["ckpt"]:
        state, recorded = read_weights(kw["ckpt"])
        if recorded.get("model_kind") == EXTERNAL and recorded.get("factory") not in (None, spec):
            note = f"checkpoint was saved from factory {recorded['factory']!r}"
        load_weights_into(model, state, source=kw["ckpt"], what=f"the module built by {spec}")
    else:
        check_finite(model.state_dict(), spec)
    external = recorded.get("model_kind") == EXTERNAL
    dataset = kw["dataset"] or recorded.get("dataset")
    if kw["input_shape"] is None and external and recorded.get("in_channels"):
        size = recorded.get("input_size")
        shape_hint = (recorded["in_channels"], size, size) if size else None
    else:
        shape_hint = kw["input_shape"]
    shape = _shape(shape_hint, dataset, spec)
    norm = _normalization(
        kw["normalize"],
        recorded.get("mean") if external else None,
        recorded.get("std") if external else None,
        shape[0],
        str(kw["ckpt"]),
        kw["force_normalize"],
    )
    output = kw["output"]
    if output == "auto" and external and recorded.get("output"):
        output = recorded["output"]
        kw["output"] = output
    if kw["num_classes"] is None and external and recorded.get("num_classes"):
        kw["num_classes"] = int(recorded["num_classes"])
    model = wrap(model, mean=norm[0], std=norm[1]) if norm else model
    meta = _meta(
        "factory",
        spec,
        path=kw["ckpt"],
        shape=shape,
        mean=norm[0] if norm else None,
        std=norm[1] if norm else None,
        dataset=dataset,
        factory=spec,
        note=note,
    )
    return model, meta


def _load_robustbench(spec: str, kw: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    ref = parse_robustbench(spec, kw["model_dir"])
    weights = require_weights(ref)
    dataset = kw["dataset"] or (ref.dataset if ref.dataset in DATASETS else None)
    if kw["input_shape"] is None and dataset is None:
        kw["input_shape"] = (3, 224, 224)  # RobustBench's ImageNet input
    shape = _shape(kw["input_shape"], dataset, spec)
    classes = kw["num_classes"] or (dataset_info(dataset).num_classes if dataset else 1000)
    arch, arch_kwargs = kw["arch"], dict(kw["arch_kwargs"] or {})
    if kw["factory"]:
        model, how = build_from_factory(kw["factory"]), f"factory {kw['factory']}"
    else:
        if not arch and (ref.dataset, ref.threat, ref.name) in KNOWN:
            arch, arch_kwargs = KNOWN[(ref.dataset, ref.threat, ref.name)]
        if arch:
            model = build_model(arch, num_classes=classes, in_channels=shape[0], **arch_kwargs)
            how = f"arch {arch!r}"
        else:
            zoo = zoo_constructor(ref)
            if zoo is None:
                raise EvalkitError(
                    f"{ref}: evalkit does not know this model's architecture offline; pass "
                    "arch=NAME (an evalkit arch with the same layout) or factory='pkg.module:fn'"
                )
            model, how = zoo, "the robustbench model zoo"
    obj = read_checkpoint_file(weights)
    if isinstance(obj, dict) and isinstance(obj.get("last"), dict):
        obj = obj["last"]  # a few entries keep {'last': ..., 'best': ...}
    load_weights_into(model, weights_of(obj, weights), source=weights, what=f"{ref} as {how}")
    norm = _normalization(kw["normalize"], None, None, shape[0], str(weights), True)
    model = wrap(model, mean=norm[0], std=norm[1]) if norm else model
    meta = _meta(
        "robustbench",
        spec,
        path=weights,
        shape=shape,
        mean=norm[0] if norm else None,
        std=norm[1] if norm else None,
        dataset=dataset,
        arch=arch,
        arch_kwargs=arch_kwargs if arch else {},
        note=f"{ref} loaded offline from {weights} as {how}",
    )
    return model, meta


def _as_lists(normalize: Normalization | None) -> tuple[list[float], list[float]] | None:
    if normalize is None:
        return None
    return [float(v) for v in normalize[0]], [float(v) for v in normalize[1]]


# ------------------------------------------------------------------------------- public


def load_any(
    spec: str | Path,
    *,
    num_classes: int | None = None,
    input_shape: Sequence[int] | None = None,
    device: torch.device | str = "cpu",
    ckpt: str | Path | None = None,
    arch: str | None = None,
    dataset: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    normalize: Normalization | None = None,
    force_normalize: bool = False,
    defense: str | None = None,
    output: str = "auto",
    model_dir: str | Path | None = None,
    factory: str | None = None,
    params: dict[str, Any] | None = None,
) -> tuple[nn.Module, SourceMeta]:
    """Load the model named by ``spec`` (see the module docstring) and probe it.

    ``num_classes``: expected class count (checked on the probe). ``input_shape``: ``(C, H, W)``
    of the images, needed where the file does not say it (TorchScript, export, factory) unless
    ``dataset`` is given. ``ckpt``: weights for a factory (``.pt`` state_dict, ``.safetensors``,
    or an evalkit checkpoint; an *external* one also supplies its recorded shape, class count,
    normalization and output mode). ``arch``/``dataset``/``arch_kwargs``:
    for a plain state_dict (``arch`` also overrides the RobustBench table). ``normalize``:
    ``(mean, std)`` per channel (one value = every channel) put in front of the model; refused
    for a checkpoint that records a different one unless ``force_normalize``. ``defense``:
    test-time plugins for evalkit archs (e.g. ``sap``); ``params`` their parameters
    (``{"sap_frac": 0.5}``, overriding recorded ones). ``output``: how to read logits (see
    :mod:`evalkit.models.wrap`). ``model_dir``: RobustBench's folder (default ``./models``).
    ``factory``: the architecture for a ``robustbench:`` entry evalkit does not know.

    Raises :class:`EvalkitError` (subclass :class:`CheckpointError` for file problems) with a
    one-line message naming the fix.
    """
    spec = str(spec)
    kw: dict[str, Any] = dict(
        num_classes=num_classes,
        input_shape=input_shape,
        device=device,
        ckpt=ckpt,
        arch=arch,
        dataset=dataset,
        arch_kwargs=arch_kwargs,
        normalize=normalize,
        force_normalize=force_normalize,
        defense=defense,
        output=output,
        model_dir=model_dir,
        factory=factory,
        params=params,
    )
    if num_classes is not None and num_classes < 2:
        raise EvalkitError(f"num_classes must be >= 2, got {num_classes}")
    path = Path(spec)
    evalkit_arch = path.exists() and detect_kind(path) in ("checkpoint", "safetensors")
    if (defense or params) and not evalkit_arch:
        raise EvalkitError(
            f"defense plugins and their params apply to evalkit architectures only, not to "
            f"{spec} (apply the defense inside your own model)"
        )
    if spec.lower().startswith("robustbench:"):
        model, meta = _load_robustbench(spec, kw)
    elif path.exists():
        if ckpt:
            raise EvalkitError(
                f"ckpt= goes with a factory spec (pkg.module:fn); {spec} already holds weights"
            )
        model, meta = _load_path(spec, path, kw)
    elif is_factory_spec(spec):
        model, meta = _load_factory(spec, kw)
    else:
        raise CheckpointError(
            f"model not found: {spec} (give a .pt/.safetensors/.pt2 file, pkg.module:fn, "
            "path/to/file.py:fn or robustbench:DATASET/THREAT/NAME)"
        )
    model = model.to(device)
    c, h, w = meta["input_shape"]
    probe = torch.rand(PROBE_BATCH, c, h, w, generator=torch.Generator().manual_seed(0))
    model, meta["num_classes"] = probe_model(
        model, probe.to(device), output=kw["output"], num_classes=kw["num_classes"]
    )
    meta["output"] = kw["output"]
    return model.eval(), SourceMeta(meta)


def as_checkpoint_meta(meta: dict[str, Any]) -> CheckpointMeta:
    """The :class:`CheckpointMeta` view of a :func:`load_any` meta dict (square images only)."""
    if meta.get("input_size") is None:
        raise EvalkitError(f"{meta.get('spec')}: evalkit evaluates square images only")
    return CheckpointMeta(
        arch=str(meta.get("arch") or meta["source"]),
        num_classes=int(meta["num_classes"]),
        in_channels=int(meta["in_channels"]),
        input_size=int(meta["input_size"]),
        mean=list(meta["mean"]),
        std=list(meta["std"]),
        defense=str(meta.get("defense") or "standard"),
        defense_params=dict(meta.get("defense_params") or {}),
        arch_kwargs=dict(meta.get("arch_kwargs") or {}),
        dataset=meta.get("dataset"),
        train_config=dict(meta.get("train_config") or {}),
        history=list(meta.get("history") or []),
        epoch=meta.get("epoch"),
        foreign=bool(meta.get("foreign", True)),
        path=meta.get("path") or meta.get("spec"),
    )
