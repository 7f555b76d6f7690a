"""Activation-value distributions at any layers of any model, natural vs adversarial inputs.

For each requested layer this collects, on natural images and on their adversarial versions:

* **activation values**: every element of the layer's output (N x C x H x W), streamed batch by
  batch; exact count, mean, standard deviation, max and the shares of exact zeros (ReLU) and of
  negative values over *all* values, plus a uniform random subsample of at most ``max_values``
  values (fixed seed) from which the quantiles and the plots are computed;
* **per-channel means**: the mean over images and positions of each channel (C values), all kept.

The result (:class:`DistributionResult`) holds a tidy table (one row per kept value), a summary
table (per model, layer, kind and statistic) and draws seaborn figures: ECDFs on a ``symlog`` x
axis (linear within +-``linthresh``, the 10th percentile of the non-zero absolute values, and
logarithmic beyond, so the exact zeros of ReLU outputs stay visible as the jump at 0) and split
violins of ``log10`` of the *positive* values (the shares of zeros and negatives are written on
the panel, since a log scale cannot show them).

Adversarial inputs are the caller's, or crafted with :func:`analysis.common.craft_adversarial`:
PGD-20, step eps/4, random start, eval mode, CE loss (the joint CE of the heads for CAS/CIFS
models) — the same PGD as the harness's ``pgd`` entry at that eps (20 steps of eps/4), so the
adversary is as strong as the harness's PGD.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from analysis.common import ModelEntry, batches, craft_adversarial, eval_mode, progress
from analysis.hooks import capture, default_layer, get_layer, inner_block_name
from analysis.naming import file_slug
from evalkit.errors import EvalkitError

KINDS = ("natural", "adversarial")
STATS = ("activation", "channel_mean")
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
PGD_STEPS = 20


# ----------------------------------------------------------------------------- layers


def _has_conv(mod: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in mod.modules())


def _unmasked(model: nn.Module, name: str) -> str:
    """The wrapped block's own output when ``name`` is a CAS/CIFS wrapper (before the mask)."""
    try:
        return inner_block_name(model, name) or name
    except EvalkitError:
        return name


def default_layers(model: nn.Module, k: int = 2) -> list[str]:
    """``k`` sensible layers, shallow to deep: the stages before the penultimate one and the
    penultimate layer itself (:func:`analysis.hooks.default_layer`; before any CAS/CIFS mask).

    On evalkit's models this gives e.g. ``["layer3", "layer4"]`` (smallcnn, ResNet-18),
    ``["layer3.block", "layer4.block"]`` for a CAS smallcnn, ``["layer4", "relu"]`` on
    PreAct-ResNet. A model without a ``penultimate`` attribute gets the last ``k`` of its
    convolution-holding children (descending through single-child wrappers).

    Raises :class:`EvalkitError` when the model holds no convolution.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, not {k}")
    pen = getattr(model, "penultimate", "") or ""
    if pen:
        last = default_layer(model)
        top = pen.split(".")[0]
        stages = [n for n, m in model.named_children() if _has_conv(m)]
        if top in stages:
            stages = stages[: stages.index(top)]
        earlier = [_unmasked(model, s) for s in stages[-(k - 1) :]] if k > 1 else []
        return earlier + [last]
    prefix, mod = "", model
    while True:
        kids = [(n, m) for n, m in mod.named_children() if _has_conv(m)]
        if not kids:
            raise EvalkitError("model has no convolution layers; pass the layers to analyse")
        if len(kids) >= k or len(list(kids[0][1].named_children())) == 0:
            return [_unmasked(model, prefix + n) for n, _ in kids[-k:]]
        prefix, mod = prefix + kids[0][0] + ".", kids[0][1]


# ----------------------------------------------------------------------------- collection


@dataclass
class _Acc:
    """Streaming statistics of one (layer, kind): exact moments and a bounded sample."""

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    zeros: int = 0
    negative: int = 0
    vmax: float = -math.inf
    samples: list[np.ndarray] = field(default_factory=list)
    channel_sum: np.ndarray | None = None
    channel_count: int = 0

    def add(self, t: torch.Tensor, keep: int, gen: torch.Generator) -> None:
        t = t.detach().float().cpu()
        flat = t.reshape(-1)
        self.n += flat.numel()
        self.total += float(flat.double().sum())
        self.total_sq += float((flat.double() ** 2).sum())
        self.zeros += int((flat == 0).sum())
        self.negative += int((flat < 0).sum())
        self.vmax = max(self.vmax, float(flat.max())) if flat.numel() else self.vmax
        if keep > 0 and flat.numel():
            idx = torch.randperm(flat.numel(), generator=gen)[: min(keep, flat.numel())]
            self.samples.append(flat[idx].numpy())
        per_channel = t.mean(dim=(2, 3)) if t.ndim == 4 else t.reshape(t.shape[0], -1)
        s = per_channel.double().sum(0).numpy()
        self.channel_sum = s if self.channel_sum is None else self.channel_sum + s
        self.channel_count += per_channel.shape[0]

    def sample(self, cap: int, gen: torch.Generator) -> np.ndarray:
        vals = np.concatenate(self.samples) if self.samples else np.zeros(0, dtype=np.float32)
        if len(vals) > cap:
            vals = vals[torch.randperm(len(vals), generator=gen)[:cap].numpy()]
        return vals

    def channel_means(self) -> np.ndarray:
        if self.channel_sum is None or self.channel_count == 0:
            return np.zeros(0)
        return self.channel_sum / self.channel_count


@torch.no_grad()
def _collect(
    model: nn.Module,
    x: torch.Tensor,
    layers: list[str],
    *,
    y: torch.Tensor | None,
    max_values: int,
    batch_size: int,
    seed: int,
    device: Any,
) -> tuple[dict[str, _Acc], float]:
    """Stream ``x`` through the model, accumulating every layer; returns (per layer, accuracy)."""
    gen = torch.Generator().manual_seed(seed)
    accs = {name: _Acc() for name in layers}
    correct, n = 0, len(x)
    with eval_mode(model), ExitStack() as stack:
        stores = {name: stack.enter_context(capture(model, name)) for name in layers}
        for sl in batches(n, batch_size):
            for st in stores.values():
                st.clear()
            logits = model(x[sl].to(device))
            if y is not None:
                correct += int((logits.argmax(1).cpu() == y[sl]).sum())
            keep = math.ceil(max_values * (sl.stop - sl.start) / max(1, n))
            for name, st in stores.items():
                if not st:
                    raise EvalkitError(
                        f"layer {name!r} did not run in the forward pass (pick another layer)"
                    )
                accs[name].add(st[-1], keep, gen)
    return accs, (correct / n if (y is not None and n) else float("nan"))


# ----------------------------------------------------------------------------- result


@dataclass
class DistributionResult:
    """Activation distributions of one or more models.

    ``table``: tidy, one row per kept value — ``model``, ``layer``, ``kind`` (natural |
    adversarial), ``stat`` (activation: a sampled activation value | channel_mean: one channel's
    mean), ``channel`` (-1 for activation rows), ``value``.
    ``summary``: one row per (model, layer, kind, stat) — ``n_total`` (values behind the exact
    statistics), ``n_kept`` (rows in ``table``), ``mean``, ``std``, ``max``, ``share_zero``,
    ``share_negative`` (exact over all values for activations), ``q05`` ... ``q95`` (from the kept
    values; exact for channel means).
    ``params``: how the inputs were made (attack, eps, layers, n, accuracy per model).
    """

    table: pd.DataFrame
    summary: pd.DataFrame
    params: dict[str, Any] = field(default_factory=dict)

    def figures(self, *, xscale: str = "auto") -> dict[str, Any]:
        """``{"ecdf": Figure, "violin": Figure}`` (matplotlib, Agg). ``xscale``: auto (symlog
        when the mass is near zero), symlog or linear for the ECDF's x axis."""
        from analysis import plots

        return {
            "ecdf": plots.activation_ecdf(self.table, xscale=xscale),
            "violin": plots.activation_violin(self.table, self.summary),
        }

    @classmethod
    def concat(cls, results: list[DistributionResult]) -> DistributionResult:
        """One result holding several models (labels must differ)."""
        labels = [m for r in results for m in r.summary["model"].unique()]
        if len(labels) != len(set(labels)):
            raise EvalkitError(f"model labels repeat across results: {labels}")
        return cls(
            pd.concat([r.table for r in results], ignore_index=True),
            pd.concat([r.summary for r in results], ignore_index=True),
            {"models": {str(r.params.get("label")): r.params for r in results}},
        )

    def scalars(self) -> dict[str, Any]:
        """Per model: per layer, the mean and zero share of activations, natural vs adversarial,
        and their ratio (what ``analysis.json`` records)."""
        out: dict[str, Any] = {}
        act = self.summary[self.summary["stat"] == "activation"]
        for (model, layer), g in act.groupby(["model", "layer"], sort=False):
            row = g.set_index("kind")
            nat, adv = row.loc["natural"], row.loc["adversarial"]
            out.setdefault(str(model), {})[str(layer)] = {
                "mean_natural": float(nat["mean"]),
                "mean_adversarial": float(adv["mean"]),
                "mean_ratio_adv_over_nat": float(adv["mean"] / nat["mean"])
                if nat["mean"] != 0
                else float("nan"),
                "share_zero_natural": float(nat["share_zero"]),
                "share_zero_adversarial": float(adv["share_zero"]),
                "median_natural": float(nat["q50"]),
                "median_adversarial": float(adv["q50"]),
            }
        return out


def _summary_rows(
    label: str, layer: str, kind: str, acc: _Acc, kept: np.ndarray, means: np.ndarray
) -> list[dict[str, Any]]:
    def quantiles(v: np.ndarray) -> dict[str, float]:
        if len(v) == 0:
            return {f"q{int(q * 100):02d}": float("nan") for q in QUANTILES}
        qs = np.quantile(v, QUANTILES)
        return {f"q{int(q * 100):02d}": float(val) for q, val in zip(QUANTILES, qs)}

    n = max(1, acc.n)
    mean = acc.total / n
    var = max(0.0, acc.total_sq / n - mean * mean)
    act = {
        "model": label,
        "layer": layer,
        "kind": kind,
        "stat": "activation",
        "n_total": int(acc.n),
        "n_kept": int(len(kept)),
        "mean": mean,
        "std": math.sqrt(var),
        "max": acc.vmax,
        "share_zero": acc.zeros / n,
        "share_negative": acc.negative / n,
        **quantiles(kept),
    }
    ch = {
        "model": label,
        "layer": layer,
        "kind": kind,
        "stat": "channel_mean",
        "n_total": int(len(means)),
        "n_kept": int(len(means)),
        "mean": float(means.mean()) if len(means) else float("nan"),
        "std": float(means.std()) if len(means) else float("nan"),
        "max": float(means.max()) if len(means) else float("nan"),
        "share_zero": float((means == 0).mean()) if len(means) else float("nan"),
        "share_negative": float((means < 0).mean()) if len(means) else float("nan"),
        **quantiles(means),
    }
    return [act, ch]


def activation_distributions(
    model: nn.Module,
    x_nat: torch.Tensor,
    x_adv: torch.Tensor | None = None,
    layers: list[str] | str | None = None,
    *,
    y: torch.Tensor | None = None,
    eps: float | None = None,
    steps: int = PGD_STEPS,
    step_size: float | None = None,
    max_values: int = 20000,
    label: str = "model",
    batch_size: int = 128,
    seed: int = 0,
    device: Any = "cpu",
    show_progress: bool = False,
) -> DistributionResult:
    """Activation distributions of ``model`` at ``layers`` for natural and adversarial inputs.

    ``x_nat``: (N, C, H, W) images in [0, 1]. ``x_adv``: their adversarial versions (same shape),
    or ``None`` to craft them with PGD-``steps`` (step ``step_size``, default eps/4, random start,
    the model's adaptive loss), which needs ``y`` (N,) labels and ``eps`` (Linf, pixel units).
    ``layers``: module names (dotted, e.g. ``layer4.1``; a list or ``"layer3,layer4"``); default
    :func:`default_layers`.
    ``max_values``: activation values kept per (layer, kind) for quantiles, table and plots.
    The model is run in eval mode and its mode restored.

    Raises :class:`EvalkitError` for an unknown layer, mismatched shapes or a missing ``y``/``eps``.
    """
    if max_values < 1:
        raise EvalkitError(f"max_values must be at least 1, not {max_values}")
    names = _layer_list(layers) or default_layers(model)
    for name in names:
        get_layer(model, name)
    if len(x_nat) == 0:
        raise EvalkitError("no images given (x_nat is empty)")
    attack: dict[str, Any] = {"attack": "given by the caller"}
    if x_adv is None:
        if y is None or eps is None:
            raise EvalkitError("pass x_adv, or y and eps to craft PGD adversarial examples")
        step = step_size if step_size is not None else eps / 4
        x_adv = craft_adversarial(
            model,
            x_nat,
            y,
            eps,
            steps=steps,
            step_size=step,
            batch_size=batch_size,
            seed=seed,
            tag=f"distributions-{label}",
            device=device,
            show_progress=show_progress,
        )
        attack = {
            "attack": f"PGD-{steps}",
            "eps": eps,
            "step_size": step,
            "random_start": True,
            "seed": seed,
        }
    if x_adv.shape != x_nat.shape:
        raise EvalkitError(
            f"x_adv has shape {tuple(x_adv.shape)}, x_nat {tuple(x_nat.shape)}; they must match"
        )
    rows, summary, accuracy = [], [], {}
    for kind, x in progress(list(zip(KINDS, (x_nat, x_adv))), label, enabled=show_progress):
        accs, acc = _collect(
            model,
            x,
            names,
            y=y,
            max_values=max_values,
            batch_size=batch_size,
            seed=seed,
            device=device,
        )
        accuracy[kind] = acc
        for name in names:
            kept = (
                accs[name].sample(max_values, torch.Generator().manual_seed(seed + 1)).astype(float)
            )
            means = accs[name].channel_means()
            rows.append(
                pd.DataFrame(
                    {
                        "model": label,
                        "layer": name,
                        "kind": kind,
                        "stat": "activation",
                        "channel": -1,
                        "value": kept,
                    }
                )
            )
            rows.append(
                pd.DataFrame(
                    {
                        "model": label,
                        "layer": name,
                        "kind": kind,
                        "stat": "channel_mean",
                        "channel": np.arange(len(means)),
                        "value": means,
                    }
                )
            )
            summary += _summary_rows(label, name, kind, accs[name], kept, means)
    params = {
        "label": label,
        "layers": names,
        "n_examples": int(len(x_nat)),
        "max_values": max_values,
        "accuracy_natural": accuracy["natural"],
        "accuracy_adversarial": accuracy["adversarial"],
        **attack,
    }
    return DistributionResult(pd.concat(rows, ignore_index=True), pd.DataFrame(summary), params)


# ----------------------------------------------------------------------------- study


def run_distribution_study(
    entries: list[ModelEntry],
    x: torch.Tensor,
    y: torch.Tensor,
    out: Any,
    *,
    eps: float,
    layers: list[str] | str | None = None,
    steps: int = PGD_STEPS,
    step_size: float | None = None,
    max_values: int = 20000,
    batch_size: int = 128,
    seed: int = 0,
    device: Any = "cpu",
    show_progress: bool = True,
    extra_params: dict[str, Any] | None = None,
) -> DistributionResult:
    """Run :func:`activation_distributions` on every model and write the study folder:
    tables ``distribution_summary`` and ``channel_means``, arrays ``values_<label>`` (the kept
    activation values), figures ``ecdf`` and ``violin`` and ``analysis.json`` (study
    ``distributions``; scalars from :meth:`DistributionResult.scalars`; ``extra_params`` are
    added to its ``params``, e.g. the data set's name)."""
    from analysis.io import AnalysisWriter

    writer = AnalysisWriter(out, "distributions")
    results = [
        activation_distributions(
            e.model,
            x,
            None,
            _layer_list(layers) or default_layers(e.model),
            y=y,
            eps=eps,
            steps=steps,
            step_size=step_size,
            max_values=max_values,
            label=e.label,
            batch_size=batch_size,
            seed=seed,
            device=device,
            show_progress=show_progress,
        )
        for e in entries
    ]
    res = DistributionResult.concat(results)
    writer.table(
        res.summary,
        "distribution_summary",
        "per model, layer, input kind and statistic: quantiles, mean, share of zeros",
    )
    ch = res.table[res.table["stat"] == "channel_mean"].drop(columns="stat")
    writer.table(ch, "channel_means", "per model, layer, kind and channel: the channel's mean")
    for r in results:
        lab = str(r.params["label"])
        act = r.table[r.table["stat"] == "activation"]
        writer.array(
            f"values_{file_slug(lab)}",
            "kept activation values, key <kind>__<layer> (a subsample)",
            **{
                f"{kind}__{layer}": g["value"].to_numpy()
                for (layer, kind), g in act.groupby(["layer", "kind"], sort=False)
            },
        )
    figs = res.figures()
    writer.figure(
        figs["ecdf"],
        "ecdf",
        "ECDF of activation values and of per-channel means, natural vs adversarial "
        "(symlog x where the mass is near zero)",
    )
    writer.figure(
        figs["violin"],
        "violin",
        "log10 of the positive activation values and channel means, natural vs adversarial; "
        "shares of zeros written per layer",
    )
    scalars = res.scalars()
    writer.finish(
        models=[e.describe() for e in entries],
        params={
            "eps": eps,
            "attack": f"PGD-{steps}",
            "step_size": step_size if step_size is not None else eps / 4,
            "random_start": True,
            "n_examples": int(len(x)),
            "max_values": max_values,
            "seed": seed,
            "layers": {str(r.params["label"]): r.params["layers"] for r in results},
            "accuracy": {
                str(r.params["label"]): {
                    "natural": r.params["accuracy_natural"],
                    "adversarial": r.params["accuracy_adversarial"],
                }
                for r in results
            },
            **(extra_params or {}),
        },
        scalars=scalars,
        finding=_finding_line(scalars),
        notes=[
            "activation quantiles come from a uniform subsample of at most max_values values per "
            "layer and kind; mean, std and zero share are exact over all values"
        ],
    )
    return res


def _finding_line(scalars: dict[str, Any]) -> str:
    parts = []
    for model, by_layer in scalars.items():
        for layer, s in by_layer.items():
            parts.append(
                f"{model} {layer}: mean adv/nat x{s['mean_ratio_adv_over_nat']:.2f}, zeros "
                f"{s['share_zero_natural']:.0%} nat / {s['share_zero_adversarial']:.0%} adv"
            )
    return "; ".join(parts)


def _layer_list(layers: list[str] | str | None) -> list[str]:
    """Layer names from a list or a comma-separated string (``"layer3,layer4"``)."""
    if layers is None:
        return []
    if isinstance(layers, str):
        return [p.strip() for p in layers.split(",") if p.strip()]
    return list(layers)


__all__ = [
    "DistributionResult",
    "activation_distributions",
    "default_layers",
    "run_distribution_study",
]
