"""``evalkit.train``: the typed keyword front of the trainer, and checkpoint completion.

>>> from evalkit.training.api import train
>>> ckpt = train(dataset="fashion-mnist-mini", arch="smallcnn", defense="at", epochs=2,
...              out="runs/at", width=8, n_train=1000)          # doctest: +SKIP

``train`` checks its arguments, builds a :class:`~evalkit.training.config.TrainConfig` and runs
:func:`evalkit.training.trainer.train`; errors are :class:`~evalkit.errors.EvalkitError` lines
that name the parameter to fix (with the ``evalkit train`` flag in brackets where the CLI user
needs it). The trainer marks its last checkpoint ``train_config["completed"] = True``;
:func:`training_complete` tells a finished model from one still training (or interrupted), and
:func:`require_complete` refuses the latter with one line.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from evalkit.checkpoint.progress import require_complete, training_complete, training_progress
from evalkit.errors import EvalkitError
from evalkit.training.config import TrainConfig
from evalkit.utils.parse import parse_eps

#: architecture options accepted at the top level of :func:`train` and folded into ``arch_kwargs``
ARCH_OPTIONS = ("width", "strides", "upsample", "pool")

_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_TOP_LEVEL = ("dataset", "arch", "defense", "epochs", "out", "seed", "resume")
# expected Python types of the options (bool is checked before int: True is an int in Python)
_TYPES: dict[str, tuple[type, ...]] = {
    "batch_size": (int,),
    "lr": (int, float),
    "momentum": (int, float),
    "weight_decay": (int, float),
    "schedule": (str,),
    "milestones": (list, tuple, type(None)),
    "gamma": (int, float),
    "attack_steps": (int,),
    "attack_bn": (str,),
    "beta": (int, float, type(None)),
    "defense_params": (dict,),
    "augment": (bool, type(None)),
    "normalize": (bool,),
    "arch_kwargs": (dict,),
    "n_train": (int, type(None)),
    "val_size": (int,),
    "val_attack_steps": (int,),
    "device": (str,),
    "amp": (str,),
    "channels_last": (bool,),
    "data_root": (str, Path, type(None)),
    "download": (bool,),
    "init": (str, Path, type(None)),
    "init_min_val_acc": (int, float, type(None)),
    "progress": (bool,),
}
_CHOICES = {
    "schedule": ("multistep", "cosine", "constant"),
    "attack_bn": ("eval", "train"),
    "amp": ("none", "bf16"),
    "pool": ("avg", "max"),
}


def option_names() -> list[str]:
    """Every keyword :func:`train` accepts besides the required ones."""
    names = [n for n in _FIELDS if n not in _TOP_LEVEL] + list(ARCH_OPTIONS) + ["params"]
    return sorted(names)


def _check_type(name: str, value: Any, types: tuple[type, ...]) -> None:
    is_bool = isinstance(value, bool)
    ok = isinstance(value, types) and not (is_bool and bool not in types)
    if not ok:
        want = " or ".join("None" if t is type(None) else t.__name__ for t in types)
        raise EvalkitError(f"train(): {name} must be {want}, not {type(value).__name__} {value!r}")


def _positive(name: str, value: int, minimum: int = 1) -> None:
    if value < minimum:
        raise EvalkitError(f"train(): {name} must be at least {minimum} (got {value})")


def make_config(
    *,
    dataset: str,
    arch: str,
    defense: str = "standard",
    epochs: int,
    out: str | Path,
    seed: int = 0,
    resume: bool = False,
    **options: Any,
) -> TrainConfig:
    """The :class:`TrainConfig` :func:`train` would run, after checking every argument.

    Raises :class:`EvalkitError` naming the parameter for unknown options, wrong types,
    out-of-range numbers and unknown choices. ``eps`` and ``attack_step_size`` accept a float
    or text such as ``"8/255"``.
    """
    for name, value, types in (
        ("dataset", dataset, (str,)),
        ("arch", arch, (str,)),
        ("defense", defense, (str,)),
        ("epochs", epochs, (int,)),
        ("out", out, (str, Path)),
        ("seed", seed, (int,)),
        ("resume", resume, (bool,)),
    ):
        _check_type(name, value, types)
    _positive("epochs", epochs)
    opts = dict(options)
    if "params" in opts:
        if "defense_params" in opts:
            raise EvalkitError("train(): pass params or defense_params, not both")
        opts["defense_params"] = opts.pop("params")
    arch_kwargs = dict(opts.pop("arch_kwargs", None) or {})
    for name in ARCH_OPTIONS:
        if name in opts and opts[name] is not None:
            arch_kwargs[name] = opts.pop(name)
        else:
            opts.pop(name, None)
    unknown = sorted(set(opts) - set(_FIELDS) | (set(opts) & set(_TOP_LEVEL)))
    if unknown:
        raise EvalkitError(
            f"train() got an unknown option {unknown[0]!r} (known: {', '.join(option_names())})"
        )
    for name, value in opts.items():
        if name in _TYPES:
            _check_type(name, value, _TYPES[name])
        if name in _CHOICES and value not in _CHOICES[name]:
            raise EvalkitError(
                f"train(): {name} must be one of {', '.join(_CHOICES[name])} (got {value!r})"
            )
    for name in ("eps", "attack_step_size"):
        if opts.get(name) is not None:
            try:
                opts[name] = parse_eps(opts[name])
            except EvalkitError as exc:
                raise EvalkitError(f"train(): {name}: {exc}") from None
    for name in ("batch_size", "attack_steps", "val_attack_steps"):
        if name in opts:
            _positive(name, opts[name])
    for name in ("val_size", "n_train"):
        if opts.get(name) is not None:
            _positive(name, opts[name], 0 if name == "val_size" else 1)
    acc = opts.get("init_min_val_acc")
    if acc is not None and not 0 <= acc <= 1:
        raise EvalkitError(f"train(): init_min_val_acc must be in [0, 1] (got {acc!r})")
    if opts.get("milestones") is not None:
        opts["milestones"] = [int(m) for m in opts["milestones"]]
    if arch_kwargs.get("pool") is not None and arch_kwargs["pool"] not in _CHOICES["pool"]:
        raise EvalkitError(f"train(): pool must be avg or max (got {arch_kwargs['pool']!r})")
    for name in ("data_root", "init"):
        if opts.get(name) is not None:
            opts[name] = str(opts[name])
    return TrainConfig(
        dataset=dataset,
        arch=arch,
        defense=defense,
        epochs=epochs,
        out=str(out),
        seed=seed,
        resume=resume,
        arch_kwargs=arch_kwargs,
        **opts,
    )


def train(
    *,
    dataset: str,
    arch: str,
    defense: str = "standard",
    epochs: int,
    out: str | Path,
    seed: int = 0,
    resume: bool = False,
    **options: Any,
) -> Path:
    """Train a classifier with a defense SPEC and return the path of ``out/checkpoint.pt``.

    Args:
        dataset: registered dataset name (``fashion-mnist-mini``, ``fashion-mnist``, ``cifar10``,
            ...); ``data_root=`` / ``download=`` say where its files are.
        arch: architecture (``smallcnn``, ``resnet18``, ``preact_resnet18``, ``wrn34_10``, ...).
        defense: SPEC ``objective[+plugin...]``, e.g. ``standard``, ``at``, ``trades+cas``,
            ``at+he``.
        epochs: number of epochs (>= 1).
        out: folder for ``checkpoint.pt`` (rewritten every epoch, marked completed after the
            last) and ``history.csv``.
        seed: derives every random choice (data order, augmentation, attack starts).
        resume: continue the interrupted run in ``out`` exactly (same options).
        **options: any other :class:`~evalkit.training.config.TrainConfig` field (``lr``,
            ``batch_size``, ``schedule``, ``eps`` (float or ``"8/255"``), ``attack_steps``,
            ``n_train``, ``val_size``, ``device``, ``init``, ``progress``, ...), the
            architecture options ``width``, ``strides``, ``upsample``, ``pool`` (or
            ``arch_kwargs={...}``), and ``params={...}`` (= ``defense_params``, e.g.
            ``{"cas_beta": 2}``).

    Returns:
        ``Path(out) / "checkpoint.pt"``, a checkpoint that :func:`training_complete` accepts.

    Raises:
        EvalkitError: a bad argument (the message names it), an ``out`` that already holds a
            checkpoint without ``resume=True``, ``resume=True`` without one, or a problem the
            trainer reports (unknown arch/defense/dataset, divergence).
    """
    from evalkit.training.trainer import train as run_trainer

    cfg = make_config(
        dataset=dataset,
        arch=arch,
        defense=defense,
        epochs=epochs,
        out=out,
        seed=seed,
        resume=resume,
        **options,
    )
    ckpt = Path(cfg.out) / "checkpoint.pt"
    if ckpt.exists() and not resume:
        raise EvalkitError(
            f"{Path(cfg.out)} already holds a checkpoint.pt: continue it with resume=True "
            "(--resume) or pick another out"
        )
    if resume and not ckpt.exists():
        raise EvalkitError(
            f"resume=True (--resume) but {Path(cfg.out)} holds no checkpoint.pt (start without it)"
        )
    return Path(run_trainer(cfg))


__all__ = [
    "ARCH_OPTIONS",
    "make_config",
    "option_names",
    "require_complete",
    "train",
    "training_complete",
    "training_progress",
]
