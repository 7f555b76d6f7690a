"""Self-describing checkpoints.

One ``.pt`` file holding only tensors and plain values, read with
``torch.load(weights_only=True)`` so a hostile pickle is refused without running anything.
It records everything needed to rebuild the (defended) model: ``evalkit attack --ckpt x.pt``
needs no other flag. A plain foreign ``state_dict`` loads with ``arch``/``dataset`` given.

Loading is strict and refuses, with one line naming the fix:

* weights holding NaN/inf (the tensor is named);
* keys that do not match the architecture. Wrapper prefixes (``module.`` from DataParallel/DDP,
  ``_orig_mod.`` from ``torch.compile``, ``model.`` from Lightning-style wrappers), in any
  nesting and order, are removed *only where removing them makes a key match* the
  architecture, so a real submodule called ``model`` keeps its name;
* ``normalize`` given for an evalkit checkpoint that records a different normalization (it
  would silently change the model); ``force_normalize=True`` overrides.

A model built outside evalkit's registry (``pkg.module:factory``) is saved as an *external*
checkpoint: its ``state_dict`` plus what is known (shape, normalization, the factory string as
a note). Loading it needs the same factory, given explicitly
(``load_any("pkg.module:factory", ckpt=path)``): the factory named in a file is never imported
automatically, since that would let a checkpoint choose code to run.
"""

from __future__ import annotations

import datetime as _dt
import pickle
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from evalkit import __version__
from evalkit.data.registry import dataset_info
from evalkit.defenses import apply_defenses, parse_spec
from evalkit.errors import CheckpointError
from evalkit.models.registry import build_model
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
#: Prefixes that training wrappers add in front of every key (DataParallel/DDP, torch.compile,
#: Lightning-style ``self.model``).
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")


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


def find_state_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    """The state_dict inside common foreign layouts (a bare dict of tensors, or one under
    ``state_dict``/``model_state_dict``/``model``/``net``); keys are returned unchanged."""
    if not isinstance(obj, Mapping):
        return None
    for key in ("state_dict", "model_state_dict", "model", "net"):
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        return None
    return {str(k): v for k, v in obj.items()}


_unwrap_state_dict = find_state_dict  # older name, used by ``evalkit info``


def _strip_chain(key: str) -> Iterator[str]:
    """``key``, then ``key`` with 1, 2, ... leading wrapper prefixes removed (any order)."""
    yield key
    while True:
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
                yield key
                break
        else:
            return


def strip_wrapper_prefixes(
    state: Mapping[str, torch.Tensor], expected: set[str]
) -> dict[str, torch.Tensor]:
    """Rename keys of ``state`` to the architecture's ``expected`` keys by removing the fewest
    leading wrapper prefixes (``module.``, ``_orig_mod.``, ``model.``, any nesting) that make the
    key match. A key that matches nothing is fully stripped (so error messages and
    :func:`adapt_foreign_state_dict` see the bare name) unless that collides with another key.
    Raises :class:`CheckpointError` when two keys land on the same name."""
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    unmatched: list[tuple[str, str, torch.Tensor]] = []
    for key, value in state.items():
        chain = list(_strip_chain(key))
        hit = next((c for c in chain if c in expected), None)
        if hit is None:
            unmatched.append((key, chain[-1], value))
            continue
        if hit in out:
            raise CheckpointError(
                f"state_dict keys {origin[hit]!r} and {key!r} both load into {hit!r} "
                "(the file mixes wrapped and unwrapped copies; keep one)"
            )
        out[hit], origin[hit] = value, key
    for key, bare, value in unmatched:
        name = bare if bare not in out and bare not in state else key
        out[name] = value
    return out


def adapt_foreign_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop parameters some repositories carry but never use (TRADES WRN's ``sub_block1``)."""
    return {k: v for k, v in sd.items() if not k.startswith("sub_block1.")}


def check_finite(state: Mapping[str, torch.Tensor], source: str | Path | None) -> None:
    """Refuse weights holding NaN/inf: :class:`CheckpointError` naming the first such tensor."""
    for key, value in state.items():
        if (value.is_floating_point() or value.is_complex()) and value.numel():
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                raise CheckpointError(
                    f"{source}: tensor {key!r} holds {bad} NaN/inf value(s) of {value.numel()}; "
                    "the weights are broken (re-export them from a run that did not diverge)"
                )


def load_weights_into(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    source: str | Path | None,
    what: str,
) -> None:
    """Strictly load ``state`` into ``model`` after the NaN/inf check, wrapper-prefix stripping
    and :func:`adapt_foreign_state_dict`. ``what`` names the model in errors (e.g.
    ``"arch 'resnet18' with defense at"``). Raises :class:`CheckpointError` (one line)."""
    check_finite(state, source)
    expected = set(model.state_dict())
    state = adapt_foreign_state_dict(strip_wrapper_prefixes(state, expected))
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch
        line = next(
            (ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln),
            str(exc).splitlines()[0],
        )
        raise CheckpointError(
            f"{source} does not match {what}: {line[:200]} (check --arch/--dataset)"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        parts = []
        if result.missing_keys:
            parts.append(f"missing {len(result.missing_keys)} keys (e.g. {result.missing_keys[0]})")
        if result.unexpected_keys:
            parts.append(
                f"unexpected {len(result.unexpected_keys)} keys (e.g. {result.unexpected_keys[0]})"
            )
        raise CheckpointError(f"{source} does not match {what}: " + "; ".join(parts))


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


def weights_of(
    obj: Any, source: str | Path | None, weights_set: str | None = None
) -> dict[str, torch.Tensor]:
    """The state_dict of anything :func:`read_checkpoint_file` returns (an evalkit checkpoint of
    either kind, or a foreign layout); :class:`CheckpointError` when there is none, and when the
    file holds raw and EMA weights and ``weights_set`` (``"ema"``/``"raw"``) does not say which
    (:func:`evalkit.checkpoint_files.select_weights`)."""
    from evalkit.checkpoint_files import select_weights

    chosen, _ = select_weights(obj, source, weights_set)
    state = dict(chosen) if chosen is not None else None
    if state is None:
        raise CheckpointError(
            f"{source} holds neither an evalkit checkpoint nor a state_dict of tensors"
        )
    return state


def _same_normalization(
    given: tuple[list[float], list[float]], mean: list[float], std: list[float]
) -> bool:
    g_mean, g_std = [float(v) for v in given[0]], [float(v) for v in given[1]]
    if len(g_mean) == 1 and len(mean) > 1:  # one value for every channel
        g_mean, g_std = g_mean * len(mean), g_std * len(std)
    if len(g_mean) != len(mean) or len(g_std) != len(std):
        return False
    pairs = list(zip(g_mean, mean)) + list(zip(g_std, std))
    return all(abs(a - float(b)) <= 1e-6 * max(1.0, abs(float(b))) for a, b in pairs)


# --------------------------------------------------------------------------------------- load


def load_model(
    path: str | Path,
    *,
    arch: str | None = None,
    dataset: str | None = None,
    normalize: tuple[list[float], list[float]] | None = None,
    defense: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
    force_normalize: bool = False,
    num_classes: int | None = None,
    params: dict[str, Any] | None = None,
    weights_set: str | None = None,
) -> tuple[nn.Module, CheckpointMeta]:
    """Load a checkpoint (evalkit's own, or a foreign state_dict with ``arch`` + ``dataset``).

    ``defense`` adds test-time plugins such as ``sap`` on top of what the checkpoint records.
    ``normalize`` sets a foreign model's input normalization; for an evalkit checkpoint, which
    records its own, a different value is refused unless ``force_normalize``. ``num_classes``
    (foreign only) is checked against the classifier's rows. ``params`` (defense parameters,
    e.g. ``{"sap_frac": 0.5}``) override the recorded ones. ``weights_set`` (``"ema"`` or
    ``"raw"``) picks the weights of a file holding both; without it such a file is refused. The
    returned model is in eval mode on ``device``. Raises :class:`CheckpointError` (one line) on
    any problem.
    """
    from evalkit.checkpoint_files import resolve_checkpoint_path

    path = resolve_checkpoint_path(path)
    obj = read_checkpoint_file(path)
    return model_from_object(
        obj,
        source=path,
        arch=arch,
        dataset=dataset,
        normalize=normalize,
        defense=defense,
        arch_kwargs=arch_kwargs,
        device=device,
        force_normalize=force_normalize,
        num_classes=num_classes,
        params=params,
        weights_set=weights_set,
    )


def model_from_object(
    obj: Any,
    *,
    source: str | Path,
    arch: str | None = None,
    dataset: str | None = None,
    normalize: tuple[list[float], list[float]] | None = None,
    defense: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    device: torch.device | str = "cpu",
    force_normalize: bool = False,
    num_classes: int | None = None,
    params: dict[str, Any] | None = None,
    weights_set: str | None = None,
) -> tuple[nn.Module, CheckpointMeta]:
    """:func:`load_model` on an already-read object (an evalkit checkpoint dict, or a
    state_dict in any foreign layout, e.g. read from ``.safetensors``); ``source`` names it."""
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        meta = read_meta(obj, source)
        state = weights_of(obj, source, weights_set)
        if normalize is not None and not _same_normalization(normalize, meta.mean, meta.std):
            if not force_normalize:
                raise CheckpointError(
                    f"{source} records its own input normalization (mean={meta.mean}, "
                    f"std={meta.std}); drop --normalize, or add --force-normalize to replace it"
                )
            meta.mean, meta.std = _expand(normalize, meta.in_channels)
    else:
        state = weights_of(obj, source, weights_set)
        if not arch or not dataset:
            raise CheckpointError(
                f"{source} is a plain state_dict without metadata: pass --arch and --dataset "
                "(and --normalize MEAN,STD if the model expects normalized input)"
            )
        info = dataset_info(dataset)
        mean, std = (
            _expand(normalize, info.in_channels)
            if normalize is not None
            else ([0.0] * info.in_channels, [1.0] * info.in_channels)
        )
        meta = CheckpointMeta(
            arch=arch,
            num_classes=info.num_classes,
            in_channels=info.in_channels,
            input_size=info.input_size,
            mean=list(mean),
            std=list(std),
            dataset=dataset,
            foreign=True,
            arch_kwargs=dict(arch_kwargs or {}),
            path=str(source),
        )
    if params:
        meta.defense_params = {**meta.defense_params, **params}
    spec = parse_spec(meta.defense, meta.defense_params)
    if defense:
        for name in parse_spec(defense).plugins:
            spec = spec.with_plugin(name)
    model = _build(meta, spec)
    if meta.foreign:
        rows = _classifier_rows(model, state)
        if rows is not None and rows != meta.num_classes:
            meta.num_classes = rows
            model = _build(meta, spec)
        if num_classes is not None and meta.num_classes != num_classes:
            raise CheckpointError(
                f"{source} has {meta.num_classes} classes but {num_classes} were expected "
                "(check --num-classes / --dataset)"
            )
    load_weights_into(model, state, source=source, what=f"arch {meta.arch!r} with defense {spec}")
    meta.defense = str(spec)
    return model.to(device).eval(), meta


def _expand(
    normalize: tuple[list[float], list[float]], channels: int
) -> tuple[list[float], list[float]]:
    """One mean/std value stands for every channel."""
    mean, std = [float(v) for v in normalize[0]], [float(v) for v in normalize[1]]
    if len(mean) == 1 and channels > 1:
        mean, std = mean * channels, std * channels
    return mean, std


def _build(meta: CheckpointMeta, spec: Any) -> nn.Module:
    if meta.num_classes < 2:
        raise CheckpointError(
            f"{meta.path}: a classifier with {meta.num_classes} classes; evalkit needs >= 2"
        )
    model = build_model(
        meta.arch,
        num_classes=meta.num_classes,
        in_channels=meta.in_channels,
        mean=meta.mean,
        std=meta.std,
        **meta.arch_kwargs,
    )
    return apply_defenses(model, spec)


def _classifier_rows(model: nn.Module, state: Mapping[str, torch.Tensor]) -> int | None:
    """Rows of the classifier weight in ``state`` (its class count), or None if absent."""
    key = f"{getattr(model, 'classifier_name', 'linear')}.weight"
    for name in state:
        if key in _strip_chain(name) and state[name].ndim == 2:
            return int(state[name].shape[0])
    return None


def _infer_classes(state: dict[str, torch.Tensor], default: int) -> int:
    """Class count from a ``linear``/``fc`` classifier weight (kept for callers of the old API)."""
    for key in ("linear.weight", "fc.weight"):
        for name in state:
            if key in _strip_chain(name) and state[name].ndim == 2:
                return int(state[name].shape[0])
    return default
