"""The feature-map/pooling model grid of the RCM study (arXiv 2202.12435).

Models that differ only in the size of the feature map before the final pooling (stage strides
and in-model upsampling) and in the pooling type (avg or max), all PGD-adversarially trained.
:func:`grid_models` describes the grid for the study runner; :func:`train_pooling_grid` trains it
directly with :func:`evalkit.training.api.train` (what ``python -m analysis.pooling`` did), and
``evalkit analyze --analysis pooling`` (or :func:`evalkit.analyses.analyze`) compares the models.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.pipelines.studies.spec import ModelDef


def parse_configs(text: str) -> list[tuple[str, int]]:
    """``"1222,1221@2"`` -> ``[("1222", 1), ("1221", 2)]`` (strides, upsample factor)."""
    out = []
    for tok in (t.strip() for t in text.split(",") if t.strip()):
        strides, _, up = tok.partition("@")
        if not strides.isdigit() or (up and not up.isdigit()):
            raise EvalkitError(
                f"bad pooling config {tok!r}: write STRIDES or STRIDES@UPSAMPLE, e.g. 1221@2"
            )
        out.append((strides, int(up or 1)))
    if not out:
        raise EvalkitError("no pooling configurations given (e.g. 1222,1221,1221@2,1111)")
    return out


def grid_label(pool: str, strides: str, upsample: int = 1) -> str:
    """``avg-1222``, ``max-1221-up2``: the model's key and analysis label."""
    return f"{pool}-{strides}" + (f"-up{upsample}" if upsample > 1 else "")


def grid_models(
    configs: Iterable[tuple[str, int]] | str,
    *,
    pools: Iterable[str] = ("avg", "max"),
    defense: str = "at",
    options: Mapping[str, Any] | None = None,
) -> list[ModelDef]:
    """One :class:`ModelDef` per (config, pool): ``strides``/``upsample``/``pool`` set, plus
    ``options`` (other :func:`~evalkit.training.api.train` options)."""
    if isinstance(configs, str):
        configs = parse_configs(configs)
    models = []
    for strides, up in configs:
        for pool in pools:
            if pool not in ("avg", "max"):
                raise EvalkitError(f"pools must be avg or max, not {pool!r}")
            models.append(
                ModelDef(
                    grid_label(pool, strides, up),
                    defense,
                    {**dict(options or {}), "strides": strides, "upsample": up, "pool": pool},
                )
            )
    return models


def train_pooling_grid(
    configs: Iterable[tuple[str, int]] | str,
    *,
    out: str | Path,
    dataset: str = "fashion-mnist-mini",
    arch: str = "smallcnn",
    epochs: int = 2,
    seed: int = 0,
    pools: Iterable[str] = ("avg", "max"),
    defense: str = "at",
    reuse: bool = False,
    **options: Any,
) -> dict[str, Path]:
    """Train the grid under ``out/<label>/`` and return ``{label: checkpoint path}``.

    ``options`` are :func:`~evalkit.training.api.train` options shared by every model (e.g.
    ``width=8, n_train=2000, eps="8/255", attack_steps=3``). With ``reuse`` a finished
    checkpoint already in place is kept (an unfinished one is resumed): off by default, since a
    path says nothing about the options a checkpoint was trained with (studies use the
    content-keyed step runner instead).
    """
    from evalkit.training.api import require_complete, train

    ckpts: dict[str, Path] = {}
    for m in grid_models(configs, pools=pools, defense=defense, options=options):
        folder = Path(out) / m.key
        ckpt = folder / "checkpoint.pt"
        if reuse and ckpt.exists():
            try:
                require_complete(ckpt)
                ckpts[m.key] = ckpt
                continue
            except EvalkitError:
                resume = True
        else:
            resume = False
            if ckpt.exists():
                ckpt.unlink()
        opts = {"val_size": 0, **dict(m.options)}
        ckpts[m.key] = train(
            dataset=dataset,
            arch=arch,
            defense=m.defense,
            epochs=epochs,
            out=folder,
            seed=seed,
            resume=resume,
            **opts,
        )
    return ckpts


__all__ = ["grid_label", "grid_models", "parse_configs", "train_pooling_grid"]
