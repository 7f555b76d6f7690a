"""CIFS: channel importance-based feature selection (Yan et al., ICML 2021).

Each CIFS site gets a probe on the global average of the site's output ``f``: linear at the
last site (whose masked map feeds the classifier) and non-linear
``Linear(C,128)-Softplus(beta=5)-Linear(128,classes)`` at every earlier one, as
``modes=['nonlinear','linear']`` in the official ResNet-18 (``cifs_probes`` overrides). The channel mask is

    m = softmax_c( sum_{h,w} d s / d f )      with  s = z[a] + z[b]

where ``z`` are the probe logits of a detached copy of ``f`` and ``(a, b)`` are the true label
and the runner-up prediction (``topk(z, 2)[:, 1]``, which may equal the label) in training mode,
the top-2 predictions in eval mode (labels are then ignored entirely, so they cannot leak). The
gradient is taken with ``create_graph=True`` so the probe learns through the mask; the output is
``f * m`` and the probe logits on the live ``f`` are the auxiliary logits (loss
``cifs_beta * mean CE(probes)``, beta = 2).

Pitfall: because the mask is computed on *detached* features, input gradients
treat it as a constant (BPDA-like). ``cifs_adaptive=true`` differentiates through the mask
instead (gradient of the relevance taken on the live features with ``create_graph``), for an
adaptive evaluation; it changes only gradients, never the forward values.

Params: ``cifs_beta`` (2.0), ``cifs_sites`` (``auto``), ``cifs_hidden`` (128),
``cifs_mask_scale`` (1.0: masks sum to 1 over channels, the paper's; one version of the
official code multiplies by 2; ``channels``: multiply by the site's channel count C, so the mask
averages 1 and the masked features keep their scale; see docs/defenses.md for when that matters), ``cifs_adaptive`` (false), ``cifs_probes`` (``auto``; or e.g.
``nonlinear,linear``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from evalkit.defenses.aux_loss import make_head_loss
from evalkit.defenses.params import get_bool, get_float, get_int
from evalkit.defenses.registry import Plugin, register
from evalkit.defenses.sites import (
    get_module,
    num_classes_of,
    resolve_sites,
    set_module,
    site_channels,
)
from evalkit.errors import EvalkitError


class GAPProbe(nn.Module):
    """Global average pool then a linear or Linear-Softplus(beta=5)-Linear classifier."""

    def __init__(
        self, channels: int, num_classes: int, *, nonlinear: bool, hidden: int = 128
    ) -> None:
        super().__init__()
        if nonlinear:
            self.net: nn.Module = nn.Sequential(
                nn.Linear(channels, hidden), nn.Softplus(beta=5), nn.Linear(hidden, num_classes)
            )
        else:
            self.net = nn.Linear(channels, num_classes)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.net(feat.mean(dim=(2, 3)))


class CIFSBlock(nn.Module):
    """Wraps one block: features from ``block``, relevance mask from ``probe``."""

    uses_labels = True
    has_aux_head = True

    def __init__(
        self, block: nn.Module, probe: GAPProbe, *, mask_scale: float = 1.0, adaptive: bool = False
    ) -> None:
        super().__init__()
        self.block = block
        self.probe = probe
        self.mask_scale = float(mask_scale)
        self.adaptive = bool(adaptive)
        self.labels: torch.Tensor | None = None
        self.aux_logits: torch.Tensor | None = None
        self.last_mask: torch.Tensor | None = None  # (N, C), for tests and analysis

    def _pair(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two classes whose logits define relevance (see the module docstring)."""
        top2 = z.topk(2, dim=1).indices
        if self.training and self.labels is not None:
            first = self.labels.to(z.device)
            if first.shape[0] != z.shape[0]:
                raise ValueError(f"CIFS got {first.shape[0]} labels for a batch of {z.shape[0]}")
            return first, top2[:, 1]
        return top2[:, 0], top2[:, 1]

    def mask(self, feat: torch.Tensor) -> torch.Tensor:
        """Softmax over channels of the spatially summed gradient of the top-2 probe logits."""
        outer_grad = torch.is_grad_enabled()
        # the graph through the gradient is needed to train the probe via the mask, and for the
        # adaptive variant; eval-mode attacks on the default variant skip its cost
        keep_graph = outer_grad and (self.training or self.adaptive)
        with torch.enable_grad():
            if self.adaptive and keep_graph and feat.requires_grad:
                src = feat  # differentiate through the mask (adaptive evaluation)
            else:
                src = feat.detach().clone().requires_grad_(True)
            z = self.probe(src)
            a, b = self._pair(z)
            rows = torch.arange(z.shape[0], device=z.device)
            score = (z[rows, a] + z[rows, b]).sum()
            (grad,) = torch.autograd.grad(score, src, create_graph=keep_graph)
        relevance = grad.sum(dim=(2, 3))
        m = torch.softmax(relevance, dim=1) * self.mask_scale
        return m if keep_graph else m.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.block(x)
        m = self.mask(feat)
        self.last_mask = m.detach()
        self.aux_logits = self.probe(feat)
        return feat * m[:, :, None, None]

    def readout(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(probe logits, the two classes defining relevance in ascending order as (N, 2), the
        mask) of the latest forward, for :mod:`evalkit.defenses.inspect`. In training mode the
        pair is the label and the runner-up; the health checks read eval-mode passes."""
        if self.aux_logits is None or self.last_mask is None:
            return None
        z = self.aux_logits
        if self.training and self.labels is not None:
            a, b = self._pair(z)
            pair = torch.stack([a, b], dim=1)
        else:
            pair = z.topk(2, dim=1).indices
        return z, pair.sort(dim=1).values, self.last_mask


PROBE_KINDS = ("linear", "nonlinear")


def probe_kinds(value: Any, n_sites: int) -> list[str]:
    """The probe of each site: ``auto`` follows the official ResNet-18 (``modes=['nonlinear',
    'linear']``): the last site, whose masked map feeds the classifier, gets a linear probe and
    every earlier site a non-linear one; or a comma list with one kind per site."""
    if value is None or value == "auto":
        return ["nonlinear"] * (n_sites - 1) + ["linear"]
    kinds = [k.strip() for k in str(value).split(",") if k.strip()]
    if len(kinds) != n_sites or any(k not in PROBE_KINDS for k in kinds):
        raise EvalkitError(
            f"defense parameter cifs_probes={value!r} needs one of linear/nonlinear per site "
            f"({n_sites} sites), e.g. cifs_probes={','.join(['nonlinear', 'linear'][-n_sites:])}"
        )
    return kinds


def apply_cifs(model: nn.Module, params: dict[str, Any]) -> nn.Module:
    """Wrap every CIFS site of ``model`` in a :class:`CIFSBlock` (in place)."""
    sites = resolve_sites(model, params.get("cifs_sites", "auto"))
    channels = site_channels(model, sites)
    classes = num_classes_of(model)
    hidden = get_int(params, "cifs_hidden")
    by_channels = str(params.get("cifs_mask_scale")).strip().lower() == "channels"
    scale = (
        1.0 if by_channels else get_float(params, "cifs_mask_scale", minimum=0.0, strict_min=True)
    )
    adaptive = get_bool(params, "cifs_adaptive")
    kinds = probe_kinds(params.get("cifs_probes", "auto"), len(sites))
    for s, kind in zip(sites, kinds):
        block = get_module(model, s)
        probe = GAPProbe(channels[s], classes, nonlinear=kind == "nonlinear", hidden=hidden)
        ref = next(block.parameters(), None)
        if ref is not None:
            probe = probe.to(ref.device)
        site_scale = float(channels[s]) if by_channels else scale
        set_module(model, s, CIFSBlock(block, probe, mask_scale=site_scale, adaptive=adaptive))
    return model


PLUGIN = register(
    Plugin(
        name="cifs",
        apply=apply_cifs,
        extra_loss=make_head_loss("cifs_beta"),
        defaults={
            "cifs_beta": 2.0,
            "cifs_sites": "auto",
            "cifs_hidden": 128,
            "cifs_mask_scale": 1.0,
            "cifs_adaptive": False,
            "cifs_probes": "auto",
        },
        summary="channel importance-based feature selection: probe-gradient softmax masks",
    )
)
