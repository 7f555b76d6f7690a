"""Building a model from a checkpoint: the architecture and defenses it records (or the
``arch``/``dataset`` a foreign state_dict is given), its normalization checked against what the
caller asked for, then the weights loaded strictly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from evalkit.checkpoint.format import FORMAT, CheckpointMeta, read_checkpoint_file, read_meta
from evalkit.checkpoint.state_dict import classifier_rows, load_weights_into, weights_of
from evalkit.data.registry import dataset_info
from evalkit.defenses import apply_defenses, parse_spec
from evalkit.errors import CheckpointError
from evalkit.models.registry import build_model


def same_normalization(
    given: tuple[list[float], list[float]], mean: list[float], std: list[float]
) -> bool:
    g_mean, g_std = [float(v) for v in given[0]], [float(v) for v in given[1]]
    if len(g_mean) == 1 and len(mean) > 1:  # one value for every channel
        g_mean, g_std = g_mean * len(mean), g_std * len(std)
    if len(g_mean) != len(mean) or len(g_std) != len(std):
        return False
    pairs = list(zip(g_mean, mean)) + list(zip(g_std, std))
    return all(abs(a - float(b)) <= 1e-6 * max(1.0, abs(float(b))) for a, b in pairs)


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
        if normalize is not None and not same_normalization(normalize, meta.mean, meta.std):
            if not force_normalize:
                raise CheckpointError(
                    f"{source} records its own input normalization (mean={meta.mean}, "
                    f"std={meta.std}); drop --normalize, or add --force-normalize to replace it"
                )
            meta.mean, meta.std = expand_normalization(normalize, meta.in_channels)
    else:
        state = weights_of(obj, source, weights_set)
        if not arch or not dataset:
            raise CheckpointError(
                f"{source} is a plain state_dict without metadata: pass --arch and --dataset "
                "(and --normalize MEAN,STD if the model expects normalized input)"
            )
        info = dataset_info(dataset)
        mean, std = (
            expand_normalization(normalize, info.in_channels)
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
    model = build_from_meta(meta, spec)
    if meta.foreign:
        rows = classifier_rows(model, state)
        if rows is not None and rows != meta.num_classes:
            meta.num_classes = rows
            model = build_from_meta(meta, spec)
        if num_classes is not None and meta.num_classes != num_classes:
            raise CheckpointError(
                f"{source} has {meta.num_classes} classes but {num_classes} were expected "
                "(check --num-classes / --dataset)"
            )
    load_weights_into(model, state, source=source, what=f"arch {meta.arch!r} with defense {spec}")
    meta.defense = str(spec)
    return model.to(device).eval(), meta


def expand_normalization(
    normalize: tuple[list[float], list[float]], channels: int
) -> tuple[list[float], list[float]]:
    """One mean/std value stands for every channel."""
    mean, std = [float(v) for v in normalize[0]], [float(v) for v in normalize[1]]
    if len(mean) == 1 and channels > 1:
        mean, std = mean * channels, std * channels
    return mean, std


def build_from_meta(meta: CheckpointMeta, spec: Any) -> nn.Module:
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
