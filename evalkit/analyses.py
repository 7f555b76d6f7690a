"""``evalkit.analyze``: run a registered analysis on models and write its outputs.

>>> from evalkit.analyses import analyze
>>> res = analyze(["runs/std/checkpoint.pt", "runs/at/checkpoint.pt"], analysis="channels",
...               class_k=0, n=500, eps=0.1, out="out/channels")          # doctest: +SKIP
>>> res.scalars["at"]["entropy_adversarial"]                              # doctest: +SKIP

The registry maps an analysis name to a function. Each module of the top-level ``analysis``
package that defines an analysis registers it where it is defined::

    from evalkit.analyses import AnalysisInputs, register_analysis

    @register_analysis("my-analysis", description="one line for --help")
    def my_analysis(inputs: AnalysisInputs, *, my_option: int = 3) -> dict:
        ...  # read inputs.models / inputs.x / inputs.y, write files under inputs.out
        #     (analysis.io.AnalysisWriter writes tables, figures and analysis.json)

so adding an analysis touches one module plus its test. This module does not import
``analysis`` when it is imported: on the first lookup it imports every public module of the
``analysis`` package (not its subpackages), which runs their ``@register_analysis`` lines.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from evalkit.errors import DataError, EvalkitError
from evalkit.evaluation.budget import Budget, parse_budgets
from evalkit.evaluation.source import ModelSource
from evalkit.utils.io import atomic_write_json
from evalkit.utils.parse import parse_eps
from evalkit.utils.suggest import did_you_mean, with_hint

ANALYSIS_PACKAGE = "analysis"


@dataclass(frozen=True)
class AnalysisSpec:
    """One registered analysis: its name, function and a one-line description."""

    name: str
    fn: Callable[..., Any]
    description: str = ""


_REGISTRY: dict[str, AnalysisSpec] = {}
_DISCOVERED = False
_IMPORT_ERRORS: dict[str, str] = {}


def register_analysis(
    name: str, *, description: str = ""
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: make ``fn(inputs: AnalysisInputs, **options)`` available as ``name``.

    Registering a second function under a taken name raises :class:`ValueError` (a
    programming error, not a user one); re-registering the same function is a no-op.
    """

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        old = _REGISTRY.get(name)
        same = old is not None and (old.fn.__module__, old.fn.__qualname__) == (
            fn.__module__,
            fn.__qualname__,
        )
        if old is not None and not same:
            raise ValueError(f"analysis {name!r} is registered twice ({old.fn.__module__})")
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = AnalysisSpec(name, fn, description or (doc[0] if doc else ""))
        return fn

    return deco


def _discover() -> None:
    """Import the public modules of the ``analysis`` package once, so they register."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    try:
        pkg = importlib.import_module(ANALYSIS_PACKAGE)
    except ImportError as exc:  # evalkit installed without the analysis package
        _IMPORT_ERRORS[ANALYSIS_PACKAGE] = str(exc)
        return
    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.ispkg or mod.name.startswith("_"):
            continue
        name = f"{ANALYSIS_PACKAGE}.{mod.name}"
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - one broken module must not hide the others
            _IMPORT_ERRORS[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"


def available_analyses() -> dict[str, AnalysisSpec]:
    """Every registered analysis by name (imports the ``analysis`` modules on first use)."""
    _discover()
    return dict(sorted(_REGISTRY.items()))


def get_analysis(name: str) -> AnalysisSpec:
    """The analysis registered as ``name``; one-line :class:`EvalkitError` listing the known ones."""
    known = available_analyses()
    if name not in known:
        broken = "; ".join(f"{m} did not import ({e})" for m, e in _IMPORT_ERRORS.items())
        raise EvalkitError(
            with_hint(
                f"unknown analysis {name!r} (known: {', '.join(known) or 'none'})",
                did_you_mean(name, known),
            )
            + (f"; {broken}" if broken else "")
        )
    return known[name]


# ------------------------------------------------------------------------------ inputs


@dataclass
class AnalysisInputs:
    """What a registered analysis function receives.

    ``models``: :class:`analysis.common.ModelEntry` list (label, model in eval mode on
    ``device``, checkpoint metadata or None); ``x``: (N, C, H, W) float images in [0, 1] on the
    CPU; ``y``: (N,) int64 labels; ``out``: the folder to write to (exists); ``eps``: the budget
    as the caller gave it (None, a float, ``"8/255"`` or a list; see :func:`single_eps` and
    :func:`eps_list`); ``sources``: what each model was loaded from (a path, or None for a
    module passed in); ``model_source``: how paths were loaded
    (:class:`~evalkit.evaluation.source.ModelSource`).
    """

    models: list[Any]
    x: torch.Tensor
    y: torch.Tensor
    out: Path
    eps: Any = None
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 128
    progress: bool = True
    class_k: int | None = None
    data_label: str | None = None
    sources: list[str | None] = field(default_factory=list)
    model_source: ModelSource = field(default_factory=ModelSource)

    def reload(self, index: int, *, defense: str | None = None) -> nn.Module:
        """Load model ``index`` again from its checkpoint, optionally with a test-time
        ``defense`` (e.g. ``sap``) added; only for models given as checkpoint paths."""
        src = self.sources[index] if index < len(self.sources) else None
        if src is None:
            raise EvalkitError(
                f"model {self.models[index].label!r} was passed as a module; this analysis needs "
                "evalkit checkpoints (pass its path)"
            )
        from evalkit.checkpoint import load_model

        how = self.model_source
        if defense:
            how = ModelSource.from_options({"defense": defense}, base=how)
        model, _ = load_model(src, device=self.device, **how.checkpoint_options())
        return model


def single_eps(value: Any, default: str = "8/255") -> float:
    """One budget from None (``default``), a number or text such as ``"8/255"``."""
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise EvalkitError(f"eps: this analysis takes one budget, got {len(value)}")
        value = value[0]
    return parse_eps(default if value is None else value)


def eps_list(value: Any, default: str) -> list[Budget]:
    """Linf :class:`~evalkit.evaluation.budget.Budget` list from None (``default``), a number,
    ``"2/255,8/255"`` or a list (:func:`evalkit.evaluation.budget.parse_budgets`, the parser
    :func:`evalkit.evaluate` uses: same values, same one-line errors)."""
    return parse_budgets(default if value is None else value, "linf")


# ------------------------------------------------------------------------------ result


@dataclass
class AnalysisResult:
    """What :func:`analyze` returns: the output folder, its ``analysis.json`` and the value the
    analysis function returned."""

    analysis: str
    out: Path
    doc: dict[str, Any]
    value: Any = None

    @property
    def scalars(self) -> dict[str, Any]:
        """The headline numbers per model (``analysis.json``'s ``scalars``)."""
        return dict(self.doc.get("scalars") or {})

    @property
    def finding(self) -> str:
        """The one-line finding the analysis wrote."""
        return str(self.doc.get("finding") or "")


# ------------------------------------------------------------------------------ loading


def _load_models(
    models: Any, device: torch.device, source: ModelSource
) -> tuple[list[Any], list[str | None]]:
    from analysis.common import ModelEntry, model_label, unique_labels
    from evalkit.checkpoint import load_model

    if isinstance(models, Mapping):
        items = list(models.items())
    elif isinstance(models, (str, Path, nn.Module)):
        items = [(None, models)]
    elif isinstance(models, Sequence):
        items = [(None, m) for m in models]
    else:
        raise EvalkitError(
            f"models must be a checkpoint path, an nn.Module, or a list/dict of them, "
            f"not {type(models).__name__}"
        )
    if not items:
        raise EvalkitError("models is empty (give at least one checkpoint path or module)")
    loaded: list[tuple[str, nn.Module, Any, str | None]] = []
    for i, (label, m) in enumerate(items):
        if isinstance(m, (str, Path)):
            model, meta = load_model(m, device=device, **source.checkpoint_options())
            loaded.append((str(label) if label else model_label(m, meta), model, meta, str(m)))
        elif isinstance(m, nn.Module):
            name = str(label) if label else f"model{i + 1}"
            loaded.append((name, m.to(device).eval(), None, None))
        else:
            raise EvalkitError(
                f"models[{i}] is a {type(m).__name__}; give checkpoint paths or nn.Modules"
            )
    labels = unique_labels([lab for lab, *_ in loaded])
    entries = [ModelEntry(lab, model, meta) for lab, (_, model, meta, _) in zip(labels, loaded)]
    return entries, [src for *_, src in loaded]


def _data_split(
    data: Any, metas: list[Any], data_root: str | Path | None, download: bool
) -> tuple[Any, str | None]:
    """An :class:`~evalkit.data.ArraySplit` and a label for ``analysis.json``."""
    from evalkit.data import DATASETS, ArraySplit, load_array_file, load_split

    if data is None:
        names = {getattr(m, "dataset", None) for m in metas if m is not None}
        names.discard(None)
        if len(names) != 1:
            raise DataError(
                "data=None needs checkpoints that name one dataset; pass data= a dataset name, "
                "an .npz/.pt file or (x, y) tensors"
                if not names
                else f"the checkpoints were trained on different datasets ({', '.join(sorted(names))}); "
                "pass data="
            )
        name = names.pop()
        return load_split(name, "test", root=data_root, download=download), name
    if isinstance(data, (str, Path)):
        text = str(data)
        if text.lower() in DATASETS:
            return load_split(text, "test", root=data_root, download=download), text
        path = Path(text)
        if path.suffix in (".npz", ".pt") or path.exists():
            return load_array_file(path), text
        raise DataError(
            f"data {text!r} is neither a dataset ({', '.join(DATASETS)}) nor an .npz/.pt file"
        )
    if isinstance(data, torch.utils.data.DataLoader):
        xs, ys = zip(*[(b[0], b[1]) for b in data])
        return ArraySplit(torch.cat(xs), torch.cat(ys).long()), "DataLoader"
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = (torch.as_tensor(v) for v in data)
        if x.ndim != 4:
            raise DataError(f"data x must be (N, C, H, W) images, got shape {tuple(x.shape)}")
        if x.dtype != torch.uint8 and x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
            raise DataError(
                "data x must be uint8 0-255 or float in [0, 1] (normalize inside the model)"
            )
        return ArraySplit(x.cpu(), y.cpu().long()), "tensors"
    raise DataError(
        f"data must be None, a dataset name, an .npz/.pt path, (x, y) tensors or a DataLoader, "
        f"not {type(data).__name__}"
    )


def _check_fit(split: Any, metas: list[Any]) -> None:
    for meta in metas:
        if meta is None or getattr(meta, "in_channels", None) is None:
            continue
        expected = (meta.in_channels, meta.input_size, meta.input_size)
        if split.shape != expected:
            raise DataError(
                f"data images are {split.shape} (C,H,W) but {meta.path or 'a model'} expects "
                f"{expected} (pick matching data)"
            )
        if len(split) and (int(split.y.max()) >= meta.num_classes or int(split.y.min()) < 0):
            raise DataError(
                f"labels range {int(split.y.min())}..{int(split.y.max())} but "
                f"{meta.path or 'a model'} has {meta.num_classes} classes"
            )


def _option_names(spec: AnalysisSpec) -> list[str]:
    """The keyword options the analysis function names in its signature."""
    params = inspect.signature(spec.fn).parameters
    return [
        n
        for n, p in list(params.items())[1:]
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]


def _unknown_option(spec: AnalysisSpec, name: str) -> EvalkitError:
    known = _option_names(spec)
    message = (
        f"analysis {spec.name!r} has no option {name!r} (its options: "
        f"{', '.join(known) or 'none'}; model-loading: {', '.join(ModelSource.names())})"
    )
    return EvalkitError(with_hint(message, did_you_mean(name, known + ModelSource.names())))


def _check_options(spec: AnalysisSpec, options: Mapping[str, Any]) -> None:
    """One line naming an option the analysis function does not take. A function with
    ``**options`` forwards them; :func:`_call` catches a name its callee refuses."""
    params = inspect.signature(spec.fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for name in options:
        if name not in _option_names(spec):
            raise _unknown_option(spec, name)


def _call(spec: AnalysisSpec, inputs: AnalysisInputs, options: dict[str, Any]) -> Any:
    """``spec.fn(inputs, **options)``; a forwarded option that its callee refuses (Python's
    "unexpected keyword argument 'NAME'" for one of ``options``) becomes the one-line error."""
    try:
        return spec.fn(inputs, **options)
    except TypeError as err:
        text = str(err)
        bad = [n for n in options if f"unexpected keyword argument '{n}'" in text]
        if not bad:
            raise
        raise _unknown_option(spec, bad[0]) from None


# ------------------------------------------------------------------------------ the API


def analyze(
    models: Any,
    *,
    analysis: str = "channels",
    data: Any = None,
    out: str | Path | None = None,
    eps: Any = None,
    n: int | None = None,
    class_k: int | None = None,
    batch_size: int = 128,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = True,
    data_root: str | Path | None = None,
    download: bool = False,
    source: ModelSource | None = None,
    **options: Any,
) -> AnalysisResult:
    """Run the analysis registered as ``analysis`` on ``models`` and write it to ``out``.

    Args:
        models: a checkpoint path, an ``nn.Module`` (logits out, inputs in [0, 1]), or a list
            of them, or a ``{label: model}`` dict; paths become labels by their run folder.
        analysis: a registered name (``channels``, ``importance``, ``pooling``, ``sap-eot``,
            ... see :func:`available_analyses`).
        data: None (the checkpoints' dataset, test split), a dataset name, an ``.npz``/``.pt``
            file with ``x``/``y``, ``(x, y)`` tensors (N,C,H,W in [0, 1] or uint8) or a
            DataLoader.
        out: output folder (tables, figures, ``analysis.json``); None writes to a new
            temporary folder (``result.out``).
        eps: budget(s): a number, ``"8/255"``, or a list for analyses that sweep it; None uses
            the analysis's default.
        n: use the first ``n`` examples (after the ``class_k`` filter).
        class_k: only examples of this class (the CAS paper's channel figures use class 0).
        batch_size, seed, device, progress: as everywhere in evalkit.
        data_root, download: where a named dataset's files are / allow torchvision to fetch.
        source: how paths are loaded (:class:`~evalkit.evaluation.source.ModelSource`: ``arch``,
            ``dataset``, ``normalize`` of a foreign state_dict; ``defense`` such as ``sap``;
            ``weights_set``), as in :func:`evalkit.evaluate`; its fields may also be given
            as keywords (``analyze(path, arch="smallcnn", dataset="fashion-mnist")``).
        **options: the analysis's own options (e.g. ``layer``, ``steps``, ``step_size``,
            ``threshold`` for ``channels``; ``eot`` for ``sap-eot``), and
            :class:`~evalkit.evaluation.source.ModelSource` fields.

    Returns:
        :class:`AnalysisResult` with ``out``, ``doc`` (``analysis.json``) and ``scalars``.

    Raises:
        EvalkitError: unknown analysis or option, bad data or models, or a model the analysis
            cannot handle (one line naming the fix).
    """
    from evalkit.utils.device import resolve_device
    from evalkit.utils.seeding import seed_everything

    spec = get_analysis(analysis)
    if batch_size < 1:
        raise EvalkitError(f"batch_size must be positive (got {batch_size})")
    if n is not None and n < 1:
        raise EvalkitError(f"n must be positive (got {n})")
    seed_everything(seed)
    dev = resolve_device(str(device)) if not isinstance(device, torch.device) else device
    loader = {k: options.pop(k) for k in list(options) if k in ModelSource.names()}
    model_source = ModelSource.from_options(loader, base=source)
    _check_options(spec, options)  # before any model is loaded
    entries, sources = _load_models(models, dev, model_source)
    metas = [e.meta for e in entries]
    split, label = _data_split(data, metas, data_root, download)
    _check_fit(split, metas)
    if class_k is not None:
        classes = max((m.num_classes for m in metas if m is not None), default=None)
        if class_k < 0 or (classes is not None and class_k >= classes):
            raise EvalkitError(f"class_k {class_k} is outside 0..{(classes or 1) - 1}")
        split = split.of_class(class_k)
        if len(split) == 0:
            raise EvalkitError(f"no examples of class {class_k} in the data")
    short = n is not None and n > len(split)
    if short:  # recorded and said, never a silent cut (class_k narrows the data first)
        where = f" of class {class_k}" if class_k is not None else ""
        short_note = (
            f"n={n} was asked for but the data holds {len(split)} examples{where}: "
            f"all {len(split)} were analysed"
        )
        print(f"evalkit analyze: {short_note}", file=sys.stderr)
    split = split.first(n)
    folder = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix=f"evalkit-{analysis}-"))
    folder.mkdir(parents=True, exist_ok=True)
    inputs = AnalysisInputs(
        models=entries,
        x=split.float_batch(slice(None)),
        y=split.y,
        out=folder,
        eps=eps,
        seed=seed,
        device=dev,
        batch_size=batch_size,
        progress=progress,
        class_k=class_k,
        data_label=label,
        sources=sources,
        model_source=model_source,
    )
    value = _call(spec, inputs, options)
    doc_path = folder / "analysis.json"
    doc = json.loads(doc_path.read_text()) if doc_path.exists() else {}
    if short and doc:
        doc["n_requested"] = n
        doc["notes"] = [*(doc.get("notes") or []), short_note]
        atomic_write_json(doc_path, doc)
    return AnalysisResult(analysis=analysis, out=folder, doc=doc, value=value)


__all__ = [
    "AnalysisInputs",
    "AnalysisResult",
    "AnalysisSpec",
    "analyze",
    "available_analyses",
    "eps_list",
    "get_analysis",
    "register_analysis",
    "single_eps",
]
