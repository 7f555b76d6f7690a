"""What to load and how: the loader options of :func:`evalkit.evaluate`, as one typed value.

A model given as a path or spec string (evalkit checkpoint, plain state_dict, TorchScript,
``pkg.module:factory``, ``robustbench:...``) needs up to ten options to load; before this object
they travelled as a ``dict[str, Any]`` restated by every layer. :class:`ModelSource` is built
once, from keywords (:meth:`ModelSource.from_options`, which ``evaluate(**options)`` and the CLI
use) or directly, checks its values there, and is passed down whole
(:func:`evalkit.evaluation.inputs.resolve_model` takes it whole;
:meth:`ModelSource.checkpoint_options` gives :func:`evalkit.checkpoint.load_model` its part).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.utils.parse import parse_normalize
from evalkit.utils.suggest import did_you_mean, with_hint

WEIGHT_SETS = ("ema", "raw")
# the fields :func:`evalkit.checkpoint.load_model` takes (checkpoints and plain state_dicts)
CHECKPOINT_FIELDS = (
    "arch",
    "dataset",
    "normalize",
    "force_normalize",
    "defense",
    "params",
    "weights_set",
)


@dataclass(frozen=True)
class ModelSource:
    """How to load a model given by path or spec (ignored parts are None for an ``nn.Module``,
    except ``defense``/``params``/``output``, which apply to any model).

    Fields:
        weights: weights file for a ``pkg.module:factory`` / ``file.py:factory`` model.
        arch, dataset: architecture and dataset of a plain state_dict (``dataset`` also names
            the default test data).
        normalize: ``(mean, std)`` per channel of a foreign model's input normalization; text
            such as ``"0.5,0.5"`` or ``"mean1,mean2,mean3;std1,std2,std3"`` is parsed by
            :func:`evalkit.utils.parse.parse_normalize`.
        force_normalize: replace the normalization an evalkit checkpoint records.
        output: how to read a loaded model's logits: ``auto``, ``first``, ``key:NAME``, ``log``.
        defense, params: test-time defense parts to add and defense parameters.
        model_dir: RobustBench's model folder (default ``./models``).
        weights_set: ``"ema"`` or ``"raw"`` for a checkpoint holding both.

    Raises:
        EvalkitError: (one line) from :meth:`from_options` and the constructor for an unknown
            option (with the closest name), an unreadable normalization or weight set.
    """

    weights: str | Path | None = None
    arch: str | None = None
    dataset: str | None = None
    normalize: tuple[list[float], list[float]] | None = None
    force_normalize: bool = False
    output: str = "auto"
    defense: str | None = None
    params: dict[str, Any] | None = None
    model_dir: str | Path | None = None
    weights_set: str | None = None

    def __post_init__(self) -> None:
        # one parse at the edge: text, tuples and lists all become (mean list, std list)
        object.__setattr__(self, "normalize", parse_normalize(self.normalize))
        if self.weights_set is not None and self.weights_set not in WEIGHT_SETS:
            raise EvalkitError(f"weights_set must be 'ema' or 'raw', not {self.weights_set!r}")
        if self.params is not None and not isinstance(self.params, Mapping):
            raise EvalkitError(f"params must be a dict of defense parameters, not {self.params!r}")

    @classmethod
    def names(cls) -> list[str]:
        """The option names, in declaration order."""
        return [f.name for f in fields(cls)]

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], *, base: ModelSource | None = None
    ) -> ModelSource:
        """``base`` (or the defaults) with ``options`` set; an unknown name is an
        :class:`EvalkitError` naming the closest known one."""
        known = cls.names()
        for name in options:
            if name not in known:
                message = f"unknown option {name!r} (model-loading options: {', '.join(known)})"
                raise EvalkitError(with_hint(message, did_you_mean(name, known)))
        start = asdict(base) if base is not None else {}
        return cls(**{**start, **dict(options)})

    def checkpoint_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`evalkit.checkpoint.load_model`, for callers that load
        evalkit checkpoints and plain state_dicts only (:func:`evalkit.analyze`). A field only
        other model sources use (``weights``, ``model_dir``, an ``output`` other than
        ``auto``) is an :class:`EvalkitError` naming it, never silently dropped."""
        unused = [
            name
            for name, value in (("weights", self.weights), ("model_dir", self.model_dir))
            if value is not None
        ] + (["output"] if self.output not in ("auto", None) else [])
        if unused:
            raise EvalkitError(
                f"{', '.join(unused)} apply to factory, TorchScript and robustbench models, "
                "which this call does not load: give evalkit checkpoints or state_dicts and "
                "drop them"
            )
        return {name: getattr(self, name) for name in CHECKPOINT_FIELDS}
