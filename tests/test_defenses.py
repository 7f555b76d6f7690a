"""Unit tests of the seed defenses' math (CAS, CIFS, HE, SAP, RCM) on tiny models and tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from evalkit.checkpoint import load_model, save_checkpoint
from evalkit.defenses import (
    apply_defenses,
    aux_logits,
    get_plugin,
    has_aux_heads,
    has_bounded_logits,
    is_stochastic,
    label_context,
    parse_spec,
    plugin_params,
)
from evalkit.defenses.cas import CASBlock
from evalkit.defenses.cifs import CIFSBlock
from evalkit.defenses.he import CosineHead
from evalkit.defenses.sap import SAP, ReLUSAP, sap_mask
from evalkit.defenses.sites import unmasked_feature_site
from evalkit.errors import EvalkitError
from evalkit.models import build_model
from evalkit.models.wide_resnet import WideResNet

TWO = "layer3,layer4"  # the two-site variant (smallcnn's default is layer4 alone)


def small(spec: str | None = None, *, seed: int = 0, **params) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model("smallcnn", num_classes=10, in_channels=1, width=8)
    if spec:
        model = apply_defenses(model, parse_spec(spec, params))
    return model


def batch(n: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def capture(module: nn.Module, x_fn) -> torch.Tensor:
    """Output of ``module`` during ``x_fn()``."""
    seen: list[torch.Tensor] = []
    h = module.register_forward_hook(lambda _m, _i, o: seen.append(o.detach()))
    try:
        x_fn()
    finally:
        h.remove()
    return seen[-1]


# ---------------------------------------------------------------- CAS


def test_cas_uses_true_label_row_in_training() -> None:
    model = small("at+cas").train()
    x, y = batch()
    site: CASBlock = model.layer4
    with label_context(model, y):
        feat = capture(site.block, lambda: model(x))
        out = capture(site, lambda: model(x))
    assert torch.equal(site.last_index, y)
    expected = feat * site.head.weight[y].detach()[:, :, None, None]
    torch.testing.assert_close(out, expected)
    # the head's own prediction differs from y for at least one example, so this is not trivial
    assert not torch.equal(site.aux_logits.argmax(1), y)


def test_cas_uses_predicted_row_at_test_and_ignores_labels() -> None:
    model = small("at+cas").eval()
    x, y = batch()
    site: CASBlock = model.layer4
    with label_context(model, y):
        feat = capture(site.block, lambda: model(x))
        out = capture(site, lambda: model(x))
    pred = site.aux_logits.argmax(1)
    assert torch.equal(site.last_index, pred)
    torch.testing.assert_close(out, feat * site.head.weight[pred].detach()[:, :, None, None])
    # outside the context (training code without labels) CAS also falls back to predictions
    model.train()
    model(x)
    assert torch.equal(site.last_index, site.aux_logits.argmax(1))


def test_cas_only_chosen_row_gets_mask_gradient() -> None:
    model = small("at+cas").train()
    x, y = batch(4)
    y = torch.zeros_like(y)  # every example uses row 0 of each head's weight
    with label_context(model, y):
        logits = model(x)
    # gradient through the mask only (heads' own logits not in the loss)
    logits.sum().backward()
    g = model.layer4.head.weight.grad
    assert g[0].abs().sum() > 0
    assert g[1:].abs().sum() == 0


def test_cas_extra_loss_is_beta_mean_head_ce() -> None:
    two = {"cas_beta": 3.0, "cas_sites": "layer3,layer4"}
    model = small("at+cas", **two).train()
    x, y = batch()
    params = plugin_params(parse_spec("at+cas", two))
    with label_context(model, y):
        logits = model(x)
        loss = get_plugin("cas").extra_loss(model, logits, y, params)
    heads = aux_logits(model)
    assert len(heads) == 2
    manual = 3.0 * (F.cross_entropy(heads[0], y) + F.cross_entropy(heads[1], y)) / 2
    torch.testing.assert_close(loss, manual)


# ---------------------------------------------------------------- no label leak, every defense

LEAK_SPECS = ["at+cas", "trades+cas", "at+cifs", "at+he", "at+rcm", "sap", "at+cas+sap"]


@pytest.mark.parametrize("spec", LEAK_SPECS)
def test_no_label_leak_at_test_time(spec: str) -> None:
    model = small(spec).eval()
    x, y = batch(16)
    shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(3))]
    assert not torch.equal(shuffled, y)
    torch.manual_seed(7)  # SAP draws from the global RNG: same draws for both calls
    plain = model(x)
    torch.manual_seed(7)
    with label_context(model, shuffled):
        given = model(x)
    torch.testing.assert_close(given, plain, rtol=0, atol=0)


@pytest.mark.parametrize("spec", ["at+cas", "at+cifs"])
def test_labels_do_reach_label_conditioned_modules_in_training(spec: str) -> None:
    """The leak test above would pass vacuously if labels never arrived; they do in training."""
    model = small(spec).train()
    x, y = batch(16)
    shuffled = (y + 1) % 10
    with label_context(model, y):
        a = model(x)
    with label_context(model, shuffled):
        b = model(x)
    assert not torch.allclose(a, b)


# ---------------------------------------------------------------- CIFS


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_cifs_masks_nonnegative_and_sum_to_one(mode: str) -> None:
    model = small("at+cifs", cifs_sites="layer3,layer4").train(mode == "train")
    x, y = batch()
    with label_context(model, y):
        model(x)
    for site in (model.layer3, model.layer4):
        m = site.last_mask
        assert m.shape == (
            8,
            site.probe.net.in_features
            if isinstance(site.probe.net, nn.Linear)
            else site.probe.net[0].in_features,
        )
        assert (m >= 0).all()
        torch.testing.assert_close(m.sum(1), torch.ones(8))


def _reference_mask(
    site: CIFSBlock, feat: torch.Tensor, first: torch.Tensor | None
) -> torch.Tensor:
    """Independent recomputation: per example, grad of z[a] + z[b] summed over space."""
    masks = []
    for i in range(feat.shape[0]):
        f = feat[i : i + 1].clone().requires_grad_(True)
        z = site.probe(f)[0]
        order = torch.argsort(z, descending=True)
        a = order[0] if first is None else first[i]
        s = z[a] + z[order[1]]
        (g,) = torch.autograd.grad(s, f)
        masks.append(torch.softmax(g[0].sum(dim=(1, 2)), dim=0))
    return torch.stack(masks)


def test_cifs_mask_matches_gradient_definition() -> None:
    model = small("at+cifs")
    x, y = batch(6)
    site: CIFSBlock = model.layer4
    model.train()
    with label_context(model, y):
        feat = capture(site.block, lambda: model(x))
    torch.testing.assert_close(site.last_mask, _reference_mask(site, feat, y), atol=1e-6, rtol=1e-5)
    model.eval()
    feat = capture(site.block, lambda: model(x))
    torch.testing.assert_close(
        site.last_mask, _reference_mask(site, feat, None), atol=1e-6, rtol=1e-5
    )


def test_cifs_probe_learns_through_the_mask_in_training_only() -> None:
    """create_graph: the final-logit loss alone reaches the probe in training (as in the paper);
    eval-mode forwards (attacks) skip that graph."""
    x, y = batch(6)
    for train_mode, expect in ((True, True), (False, False)):
        model = small("at+cifs", cifs_sites=TWO).train(train_mode)
        with label_context(model, y):
            F.cross_entropy(model(x), y).backward()
        g = model.layer3.probe.net[0].weight.grad
        assert (g is not None and g.abs().sum() > 0) == expect


def test_cifs_probes_nonlinear_first_then_linear() -> None:
    model = small("at+cifs", cifs_sites=TWO)
    assert isinstance(model.layer3.probe.net, nn.Sequential)
    assert (
        isinstance(model.layer3.probe.net[1], nn.Softplus) and model.layer3.probe.net[1].beta == 5
    )
    assert isinstance(model.layer4.probe.net, nn.Linear)


def test_cifs_works_under_no_grad_and_adaptive_gives_the_true_gradient() -> None:
    """Forward values agree; only the adaptive variant's input gradient matches finite
    differences (the default treats the mask as a constant, seeds.md 2d)."""
    x, y = batch(4)
    models = [
        small("at+cifs", seed=5, cifs_sites=TWO).double().eval(),
        small("at+cifs", seed=5, cifs_adaptive=True, cifs_sites=TWO).double().eval(),
    ]
    with torch.no_grad():  # sharpen the non-linear probe so the mask depends on the features
        for m in models:
            m.layer3.probe.net[0].weight.mul_(40)
    x = x.double()
    with torch.no_grad():
        torch.testing.assert_close(models[0](x), models[1](x))

    def f(m, xx):
        return F.cross_entropy(m(xx), y, reduction="sum")

    d = torch.randn(x.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    h = 1e-6  # the map is quite curved; 1e-6 in float64 is converged to ~1e-5 relative
    with torch.no_grad():
        fd = float((f(models[0], x + h * d) - f(models[0], x - h * d)) / (2 * h))
    errs = []
    for m in models:
        xr = x.clone().requires_grad_(True)
        f(m, xr).backward()
        errs.append(abs(float((xr.grad * d).sum()) - fd))
    assert errs[1] < 1e-3 * abs(fd) + 1e-9
    assert errs[0] > 10 * errs[1]


# ---------------------------------------------------------------- HE


@pytest.mark.parametrize("s", [10.0, 15.0])
def test_he_logits_bounded_by_s(s: float) -> None:
    model = small("at+he", he_s=s).eval()
    x = torch.rand(32, 1, 28, 28) * 1.0
    logits = model(x * 50)  # large inputs: unbounded logits would blow past s
    assert logits.abs().max() <= s + 1e-4
    assert logits.abs().max() > 0.1 * s
    assert has_bounded_logits(model)


def test_he_head_is_cosine_without_bias_and_margin_only_on_true_class() -> None:
    model = small("at+he")
    head = model.linear
    assert isinstance(head, CosineHead) and not hasattr(head, "bias")
    assert set(model.state_dict()) >= {"linear.weight"} and "linear.bias" not in model.state_dict()
    feat = torch.randn(5, head.weight.shape[1])
    torch.testing.assert_close(head(feat), head(feat * 7.0))  # scale invariant
    params = plugin_params(parse_spec("at+he"))
    logits = head(feat)
    y = torch.tensor([0, 1, 2, 3, 4])
    diff = logits - get_plugin("he").margin_logits(logits, y, params)
    expected = torch.zeros_like(logits)
    expected[torch.arange(5), y] = params["he_s"] * params["he_m"]
    torch.testing.assert_close(diff, expected)


def test_he_gradient_flows_through_weight_normalisation() -> None:
    """Normalising inside the graph: scaling a weight row leaves logits unchanged, so the
    gradient w.r.t. a row is orthogonal to that row."""
    head = CosineHead(6, 3, s=10.0)
    feat = torch.randn(4, 6)
    head(feat)[:, 1].sum().backward()
    row, g = head.weight[1].detach(), head.weight.grad[1]
    assert abs(float(row @ g)) < 1e-5 * float(row.norm() * g.norm()) + 1e-7


# ---------------------------------------------------------------- SAP


@pytest.mark.parametrize("sampling", ["bernoulli", "multinomial"])
@pytest.mark.parametrize("frac", [1.0, 0.2])
def test_sap_unbiased_monte_carlo(frac: float, sampling: str) -> None:
    """E[SAP(h)] = h. With K draws the mean's standard error per unit is
    |h| * sqrt((1/q - 1) / K), q = 1 - (1 - p)^r; we allow 5 standard errors (+1e-6)."""
    torch.manual_seed(0)
    h = torch.relu(torch.randn(1, 3, 4, 4)) + 0.0
    h[0, 0, 0, 0] = 0.0
    k = 20000
    draws = SAP(frac, sampling)(h.expand(k, -1, -1, -1).contiguous())
    mean = draws.mean(0, keepdim=True)
    p = h.flatten() / h.sum()
    r = max(1, int(frac * h.numel()))
    q = 1 - (1 - p) ** r
    se = (h.flatten() * torch.sqrt((1 / q.clamp_min(1e-12) - 1) / k)).view_as(h)
    assert ((mean - h).abs() <= 5 * se + 1e-6).all()
    assert (draws[:, 0, 0, 0] == 0).all()  # zeros stay zero
    # it really is stochastic: many units are pruned in a single draw
    assert (draws[0] == 0).sum() > (h == 0).sum()
    # both samplers keep each unit with the same probability q (the paper's with-replacement rate)
    kept = (draws != 0).float().mean(0).flatten()
    nz = p > 0
    assert ((kept[nz] - q[nz]).abs() <= 5 * torch.sqrt(q[nz] * (1 - q[nz]) / k) + 1e-3).all()


def test_sap_differs_between_calls_and_mask_is_constant_in_backward() -> None:
    model = small("sap").eval()
    x, _ = batch(4)
    assert is_stochastic(model)
    assert not torch.equal(model(x), model(x))
    h = torch.rand(2, 10, requires_grad=True)
    torch.manual_seed(1)
    out = SAP(1.0)(h)
    out.sum().backward()
    torch.manual_seed(1)
    mask = sap_mask(h.detach(), 1.0)
    torch.testing.assert_close(h.grad, mask)


def test_sap_replaces_every_relu_and_is_idempotent() -> None:
    base = build_model("resnet18", num_classes=10, in_channels=3, width=4)
    n_relu = sum(type(m) is nn.ReLU for m in base.modules())
    model = apply_defenses(base, parse_spec("sap"))
    model = get_plugin("sap").apply(model, {"sap_frac": 1.0})
    assert sum(isinstance(m, ReLUSAP) for m in model.modules()) == n_relu
    assert sum(isinstance(m, SAP) for m in model.modules()) == n_relu
    assert get_plugin("sap").test_time_only


# ---------------------------------------------------------------- RCM


def map_size(arch: str, spec: str | None = None, **kw) -> tuple[int, int]:
    in_ch = 3
    model = build_model(arch, num_classes=10, in_channels=in_ch, **kw)
    if spec:
        model = apply_defenses(model, parse_spec(spec))
    seen: list[tuple[int, int]] = []
    model.pool.register_forward_pre_hook(lambda _m, a: seen.append(tuple(a[0].shape[-2:])))
    model.eval()
    with torch.no_grad():
        model(torch.rand(1, in_ch, 32, 32))
    return seen[0]


@pytest.mark.parametrize(
    "arch,spec,kw,size",
    [
        ("resnet18", None, {"width": 4}, (4, 4)),
        ("resnet18", None, {"width": 4, "strides": "1122"}, (8, 8)),
        ("resnet18", "at+rcm", {"width": 4}, (8, 8)),
        ("preact_resnet18", None, {"width": 4, "strides": "1122"}, (8, 8)),
        ("vgg16", None, {"strides": "11222"}, (4, 4)),
        ("vgg16", "at+rcm", {}, (2, 2)),
        ("alexnet", None, {"strides": "1122"}, (7, 7)),
        ("alexnet", "at+rcm", {}, (4, 4)),
    ],
)
def test_rcm_feature_map_size_before_pooling(arch, spec, kw, size) -> None:
    assert map_size(arch, spec, **kw) == size


def test_rcm_upsample_param_and_max_pool_option() -> None:
    assert map_size("resnet18", "at+rcm", width=4) == (8, 8)
    model = apply_defenses(
        build_model("resnet18", num_classes=10, in_channels=3, width=4),
        parse_spec("at+rcm", {"rcm_upsample": 3}),
    )
    assert model.upsample.factor == 3
    maxed = build_model("resnet18", num_classes=10, in_channels=3, width=4, pool="max")
    assert isinstance(maxed.pool, nn.AdaptiveMaxPool2d)


# ---------------------------------------------------------------- placements


def test_paper_placements() -> None:
    r18 = apply_defenses(
        build_model("resnet18", num_classes=10, in_channels=3, width=4), parse_spec("at+cas")
    )
    assert isinstance(r18.layer4[0], CASBlock) and isinstance(r18.layer4[1], CASBlock)
    assert r18.layer4[1].head.in_features == 32
    vgg = apply_defenses(build_model("vgg16", num_classes=10, in_channels=3), parse_spec("at+cifs"))
    assert all(isinstance(vgg.layer5[i], CIFSBlock) for i in range(3))
    assert vgg(torch.rand(2, 3, 32, 32)).shape == (2, 10) and len(aux_logits(vgg)) == 3


def test_wrn_placement_is_block_input_activation_plus_final_features() -> None:
    torch.manual_seed(0)
    wrn = WideResNet(depth=10, widen_factor=1, num_classes=10)  # tiny stand-in for wrn34_10
    wrn.arch_config = {"arch": "wrn34_10", "num_classes": 10, "in_channels": 3}
    wrn = apply_defenses(wrn, parse_spec("at+cas"))
    assert isinstance(wrn.block3.layer[0].relu1, CASBlock)
    assert isinstance(wrn.relu, CASBlock)
    assert wrn.relu.head.in_features == 64
    assert wrn(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert len(aux_logits(wrn)) == 2 and has_aux_heads(wrn)
    he = apply_defenses(WideResNet(depth=10, widen_factor=1, num_classes=10), parse_spec("at+he"))
    assert isinstance(he.fc, CosineHead)


def test_unmasked_feature_site_for_activation_analysis() -> None:
    r18 = apply_defenses(
        build_model("resnet18", num_classes=10, in_channels=3, width=4), parse_spec("at+cas")
    )
    assert unmasked_feature_site(r18) == "layer4.1.block"
    plain = build_model("resnet18", num_classes=10, in_channels=3, width=4)
    assert unmasked_feature_site(plain) == "layer4"


def test_user_mistakes_raise_evalkit_errors() -> None:
    with pytest.raises(EvalkitError, match="cas_sites|submodule"):
        small("at+cas", cas_sites="layer9")
    with pytest.raises(EvalkitError, match="sap_frac"):
        small("sap", sap_frac=0)
    with pytest.raises(EvalkitError, match="he_s"):
        small("at+he", he_s="big")
    with pytest.raises(EvalkitError, match="rcm_upsample"):
        small("at+rcm", rcm_upsample=1.5)


def test_string_params_from_the_cli_are_accepted() -> None:
    model = small("at+cifs", cifs_adaptive="true", cifs_hidden="16", cifs_sites=TWO)
    assert model.layer3.adaptive and model.layer3.probe.net[0].out_features == 16


# ---------------------------------------------------------------- checkpoint round trip


@pytest.mark.parametrize(
    "spec", ["at+cas", "mart+cas", "at+cifs", "trades+he", "at+rcm", "at+he+sap"]
)
def test_checkpoint_round_trip_rebuilds_defended_model(spec: str, tmp_path) -> None:
    params = {"he_s": 15.0} if "he" in spec else {}
    model = small(spec, seed=11, **params)
    with torch.no_grad():  # make every parameter non-default so a missed load is visible
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    parsed = parse_spec(spec, params)
    path = tmp_path / "ckpt.pt"
    save_checkpoint(
        path,
        model,
        dataset="fashion-mnist-mini",
        input_size=28,
        defense=str(parsed),
        defense_params=plugin_params(parsed),
    )
    loaded, meta = load_model(path)
    assert meta.defense == str(parsed)
    model.eval()
    x, _ = batch(4)
    torch.manual_seed(2)
    a = model(x)
    torch.manual_seed(2)
    b = loaded(x)
    torch.testing.assert_close(a, b)
    assert type(loaded.layer4) is type(model.layer4)
    if "rcm" in spec:
        assert loaded.upsample.factor == 2
    if "he" in spec:
        assert loaded.linear.s == 15.0


def test_sap_added_on_load_to_a_plain_checkpoint(tmp_path) -> None:
    model = small("at", seed=4)
    path = tmp_path / "plain.pt"
    save_checkpoint(path, model, dataset="fashion-mnist-mini", input_size=28, defense="at")
    loaded, meta = load_model(path, defense="sap")
    assert is_stochastic(loaded) and "sap" in meta.defense
    x, _ = batch(4)
    with torch.no_grad():
        out = torch.stack([loaded(x) for _ in range(40)]).mean(0)
        plain = model.eval()(x)
    # unbiased per layer but not through the nonlinear net: only check it stays close-ish
    assert out.argmax(1).eq(plain.argmax(1)).float().mean() >= 0.5
    assert math.isfinite(float(out.abs().max()))


def test_cifs_mask_scale_channels_keeps_the_selection_and_averages_one() -> None:
    paper = small("at+cifs", seed=3).eval()
    scaled = small("at+cifs", seed=3, cifs_mask_scale="channels").eval()
    x, _ = batch()
    paper(x)
    scaled(x)
    c = paper.layer4.last_mask.shape[1]
    torch.testing.assert_close(paper.layer4.last_mask.sum(1), torch.ones(8))
    torch.testing.assert_close(scaled.layer4.last_mask, c * paper.layer4.last_mask)
    with pytest.raises(EvalkitError, match="cifs_mask_scale"):
        small("at+cifs", cifs_mask_scale="wide")
