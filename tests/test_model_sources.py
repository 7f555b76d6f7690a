"""Every way a model gets into evalkit (load_any, wrap, hardened checkpoints), refused cases
named with one line. All models are tiny; each test runs in well under a second on one core."""

from __future__ import annotations

import importlib.util
import os
import pickle
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from evalkit.checkpoint import load_model, save_checkpoint, strip_wrapper_prefixes
from evalkit.errors import CheckpointError, EvalkitError
from evalkit.models import build_model, check_outputs, load_any, wrap
from evalkit.models import robustbench_offline as rb
from evalkit.models.archive_audit import pickle_globals
from evalkit.models.sources import as_checkpoint_meta

DS = "fashion-mnist-mini"  # 1x28x28, 10 classes, bundled
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")

FACTORY_SRC = textwrap.dedent(
    """
    import torch
    import torch.nn as nn


    class Holder(nn.Module):
        # a real submodule called `model` (Lightning style): its prefix must survive loading
        def __init__(self, classes=3, channels=1):
            super().__init__()
            self.model = nn.Sequential(
                nn.Conv2d(channels, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
            )
            self.head = nn.Linear(4, classes)

        def forward(self, x):
            return self.head(self.model(x))


    class TupleOut(Holder):
        def forward(self, x):
            z = super().forward(x)
            return z, torch.zeros_like(z)


    class DictOut(Holder):
        def forward(self, x):
            return {"feat": self.model(x), "logits": super().forward(x)}


    class NanOut(Holder):
        def forward(self, x):
            return super().forward(x) * float("nan")


    def holder():
        torch.manual_seed(0)
        return Holder(3)

    def two_class():
        torch.manual_seed(0)
        return Holder(2)

    def softmaxed():
        torch.manual_seed(0)
        return nn.Sequential(Holder(3), nn.Softmax(dim=1))

    def tuple_out():
        return TupleOut()

    def dict_out():
        return DictOut()

    def nan_out():
        return NanOut()

    def not_a_module():
        return 3

    def small_wrn():
        from evalkit.models.wide_resnet import WideResNet
        return WideResNet(num_classes=10, in_channels=3, depth=10, widen_factor=2)
    """
)


@pytest.fixture()
def factory_file(tmp_path: Path) -> Path:
    path = tmp_path / "user_nets.py"
    path.write_text(FACTORY_SRC)
    return path


def _smallcnn(classes: int = 10, **kw) -> nn.Module:
    torch.manual_seed(0)
    return build_model("smallcnn", num_classes=classes, in_channels=1, width=4, **kw).eval()


def _x(n: int = 4, c: int = 1, s: int = 28) -> torch.Tensor:
    return torch.rand(n, c, s, s, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------------- each source kind


def test_evalkit_checkpoint_source(tmp_path):
    model = _smallcnn(mean=[0.3], std=[0.4])
    save_checkpoint(tmp_path / "m.pt", model, dataset=DS, defense="standard")
    loaded, meta = load_any(tmp_path / "m.pt")
    assert meta["source"] == "evalkit" and meta["num_classes"] == 10 and meta["mean"] == [0.3]
    assert torch.equal(loaded(_x()), model(_x()))


def test_plain_state_dict_source_needs_arch(tmp_path):
    model = _smallcnn()
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(CheckpointError, match="pass --arch and --dataset"):
        load_any(tmp_path / "sd.pt")
    loaded, meta = load_any(
        tmp_path / "sd.pt", arch="smallcnn", dataset=DS, arch_kwargs={"width": 4}
    )
    assert meta["source"] == "state_dict" and meta["foreign"]
    assert torch.equal(loaded(_x()), model(_x()))


def test_safetensors_source(tmp_path):
    st = pytest.importorskip("safetensors.torch")
    model = _smallcnn()
    st.save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "m.safetensors"
    )
    loaded, meta = load_any(
        tmp_path / "m.safetensors", arch="smallcnn", dataset=DS, arch_kwargs={"width": 4}
    )
    assert meta["source"] == "safetensors"
    assert torch.equal(loaded(_x()), model(_x()))


def test_safetensors_missing_package_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "m.safetensors").write_bytes(b"\x00" * 16)
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(EvalkitError, match=r"pip install 'evalkit\[safetensors\]'"):
        load_any(tmp_path / "m.safetensors", arch="smallcnn", dataset=DS)


def test_torchscript_source_keeps_gradients(tmp_path):
    model = _smallcnn()
    torch.jit.trace(model, _x(2)).save(str(tmp_path / "m.pt"))  # sniffed, not by suffix
    loaded, meta = load_any(tmp_path / "m.pt", dataset=DS)
    assert meta["source"] == "torchscript" and meta["num_classes"] == 10
    ck = as_checkpoint_meta(meta)
    assert (ck.in_channels, ck.input_size, ck.num_classes, ck.dataset) == (1, 28, 10, DS)
    x = _x().requires_grad_(True)
    out = loaded(x)
    assert torch.allclose(out, model(x), atol=1e-5)
    out[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_torchscript_needs_a_shape(tmp_path):
    torch.jit.trace(_smallcnn(), _x(2)).save(str(tmp_path / "m.ts"))
    with pytest.raises(EvalkitError, match="input shape is unknown"):
        load_any(tmp_path / "m.ts")


def test_export_source_dynamic_batch_and_eval(tmp_path):
    model = _smallcnn()
    batch = torch.export.Dim("batch")
    ep = torch.export.export(model, (_x(2),), dynamic_shapes={"x": {0: batch}})
    torch.export.save(ep, tmp_path / "m.pt2")
    loaded, meta = load_any(tmp_path / "m.pt2", input_shape=(1, 28, 28))
    assert meta["source"] == "export" and meta["num_classes"] == 10
    loaded.eval()  # a bare exported GraphModule refuses eval(); ours must not
    x = _x(5).requires_grad_(True)
    out = loaded(x)
    assert torch.allclose(out, model(x), atol=1e-5)
    out.sum().backward()
    assert x.grad.abs().sum() > 0


def test_export_static_batch_names_the_fix(tmp_path):
    ep = torch.export.export(_smallcnn(), (_x(2),))
    torch.export.save(ep, tmp_path / "m.pt2")
    with pytest.raises(EvalkitError, match="dynamic_shapes"):
        load_any(tmp_path / "m.pt2", dataset=DS)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_export_archive_with_a_pickle_is_refused_before_loading(tmp_path):
    batch = torch.export.Dim("batch")
    ep = torch.export.export(_smallcnn(), (_x(2),), dynamic_shapes={"x": {0: batch}})
    torch.export.save(ep, tmp_path / "clean.pt2")
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(tmp_path / "clean.pt2") as src, zipfile.ZipFile(evil, "w") as dst:
        root = src.namelist()[0].split("/")[0]
        for info in src.infolist():
            dst.writestr(info, src.read(info.filename))
        dst.writestr(f"{root}/data/sample_inputs/extra.pkl", pickle.dumps(_Payload(marker)))
    with pytest.raises(CheckpointError, match="refused.*could run code"):
        load_any(evil, dataset=DS)
    assert not marker.exists()
    assert pickle_globals(pickle.dumps({"a": [1, 2.0]})) == []
    assert pickle_globals(pickle.dumps(_Payload(marker)))


def test_file_factory_with_weights_and_a_real_model_submodule(tmp_path, factory_file):
    spec = f"{factory_file}:holder"
    ref, meta = load_any(spec, dataset=DS)
    assert meta["source"] == "factory" and meta["num_classes"] == 3
    # weights saved by DDP + torch.compile: the wrapper prefixes go, `model.` stays
    trained = ref.state_dict()
    trained = {k: v + 0.5 for k, v in trained.items()}
    torch.save({"_orig_mod.module." + k: v for k, v in trained.items()}, tmp_path / "w.pt")
    loaded, _ = load_any(spec, ckpt=tmp_path / "w.pt", dataset=DS)
    got = loaded.state_dict()
    assert set(got) == set(trained) and all(torch.equal(got[k], trained[k]) for k in got)
    assert any(k.startswith("model.") for k in got)


def test_module_factory(tmp_path, monkeypatch):
    pkg = tmp_path / "ek_sources_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(FACTORY_SRC)
    monkeypatch.syspath_prepend(str(tmp_path))
    model, meta = load_any("ek_sources_pkg.nets:two_class", input_shape=(1, 28, 28))
    assert meta["num_classes"] == 2 and model(_x()).shape == (4, 2)
    with pytest.raises(EvalkitError, match="cannot import module"):
        load_any("ek_no_such_pkg.nets:fn", dataset=DS)
    with pytest.raises(EvalkitError, match="has no attribute"):
        load_any("ek_sources_pkg.nets:nope", dataset=DS)
    with pytest.raises(EvalkitError, match="not a torch nn.Module"):
        load_any("ek_sources_pkg.nets:not_a_module", dataset=DS)


def test_unknown_spec():
    with pytest.raises(CheckpointError, match="model not found"):
        load_any("no/such/file.pt")


# --------------------------------------------------------------------------- RobustBench


def _robustbench_wrn_module():
    """RobustBench's own WideResNet class, from the copy torchattacks ships (independent code)."""
    spec = importlib.util.find_spec("robustbench")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "model_zoo/architectures/wide_resnet.py"
    if not path.is_file():
        return None
    mod_spec = importlib.util.spec_from_file_location("_rb_wide_resnet_for_test", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


def test_robustbench_offline_matches_robustbench_wideresnet(tmp_path, factory_file):
    rb_wrn = _robustbench_wrn_module()
    if rb_wrn is None:
        pytest.skip("no copy of RobustBench's WideResNet installed to cross-check against")
    torch.manual_seed(0)
    theirs = rb_wrn.WideResNet(depth=10, widen_factor=2, sub_block1=True)
    for m in theirs.modules():  # non-trivial BN statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    theirs.eval()
    folder = tmp_path / "models" / "cifar10" / "Linf"
    folder.mkdir(parents=True)
    # the layout RobustBench checkpoints use: {'state_dict': {'module.' + key: ...}}
    sd = {"module." + k: v for k, v in theirs.state_dict().items()}
    torch.save({"state_dict": sd}, folder / "TinyWRN.pt")
    model, meta = load_any(
        "robustbench:cifar10/Linf/TinyWRN",
        model_dir=tmp_path / "models",
        factory=f"{factory_file}:small_wrn",
    )
    assert meta["source"] == "robustbench" and meta["dataset"] == "cifar10"
    x = _x(3, 3, 32)
    assert torch.allclose(model(x), theirs(x), atol=1e-5)


def test_robustbench_known_table_dispatch(tmp_path, monkeypatch):
    assert rb.KNOWN[("cifar10", "Linf", "Standard")] == ("wrn28_10", {})
    monkeypatch.setitem(rb.KNOWN, ("cifar10", "L2", "Tiny"), ("smallcnn", {"width": 4}))
    torch.manual_seed(0)
    ref = build_model("smallcnn", num_classes=10, in_channels=3, width=4).eval()
    folder = tmp_path / "cifar10" / "L2"
    folder.mkdir(parents=True)
    torch.save(ref.state_dict(), folder / "Tiny.pt")
    model, meta = load_any("robustbench:cifar10/l2/Tiny", model_dir=tmp_path)
    assert meta["arch"] == "smallcnn"
    assert torch.equal(model(_x(2, 3, 32)), ref(_x(2, 3, 32)))


def test_robustbench_missing_weights_names_file_and_folder(tmp_path):
    with pytest.raises(EvalkitError) as err:
        load_any("robustbench:cifar10/Linf/Standard", model_dir=tmp_path / "models")
    msg = str(err.value)
    expected = tmp_path / "models" / "cifar10" / "Linf" / "Standard.pt"
    assert str(expected) in msg and "never downloads" in msg and "\n" not in msg
    with pytest.raises(EvalkitError, match="unknown RobustBench threat"):
        load_any("robustbench:cifar10/Linf3/Standard")


# ------------------------------------------------------------------------- output checks


def test_probability_outputs_are_refused_with_the_fix(factory_file):
    with pytest.raises(EvalkitError) as err:
        load_any(f"{factory_file}:softmaxed", dataset=DS)
    msg = str(err.value)
    assert "probabilities" in msg and "logits" in msg and "output='log'" in msg
    assert "\n" not in msg
    model, _ = load_any(f"{factory_file}:softmaxed", dataset=DS, output="log")
    ref, _ = load_any(f"{factory_file}:holder", dataset=DS)
    with pytest.raises(EvalkitError, match="already returns logits"):
        load_any(f"{factory_file}:holder", dataset=DS, output="log")
    # log-softmax = logits minus a per-row constant: same argmax, same logit differences
    a, b = model(_x()), ref(_x())
    assert torch.allclose(a - a[:, :1], b - b[:, :1], atol=1e-4)


def test_tuple_dict_and_nan_outputs(factory_file):
    with pytest.raises(EvalkitError, match="output='first'"):
        load_any(f"{factory_file}:tuple_out", dataset=DS)
    model, meta = load_any(f"{factory_file}:tuple_out", dataset=DS, output="first")
    assert model(_x()).shape == (4, 3)
    with pytest.raises(EvalkitError, match="output='key:NAME'"):
        load_any(f"{factory_file}:dict_out", dataset=DS)
    model, _ = load_any(f"{factory_file}:dict_out", dataset=DS, output="key:logits")
    assert model(_x()).shape == (4, 3)
    with pytest.raises(EvalkitError, match="NaN/inf"):
        load_any(f"{factory_file}:nan_out", dataset=DS)
    with pytest.raises(EvalkitError, match="3 logits per image but 10"):
        load_any(f"{factory_file}:holder", dataset=DS, num_classes=10)


def test_wrap_normalizes_in_front_and_check_outputs():
    inner = _smallcnn()
    wrapped = wrap(inner, mean=[0.5], std=[0.25])
    x = _x()
    assert torch.allclose(wrapped(x), inner((x - 0.5) / 0.25), atol=1e-6)
    assert wrap(inner) is inner
    with pytest.raises(EvalkitError, match="both mean and std"):
        wrap(inner, mean=[0.5])
    soft = nn.Sequential(inner, nn.Softmax(dim=1))
    with pytest.raises(EvalkitError, match="probabilities"):
        check_outputs(soft, x)
    assert check_outputs(inner, x) is inner


# ---------------------------------------------------------------- checkpoint hardening


def test_nan_weights_refused_naming_the_tensor(tmp_path, factory_file):
    model = _smallcnn()
    sd = model.state_dict()
    sd["linear.bias"][1] = float("nan")
    torch.save(sd, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="'linear.bias' holds 1 NaN/inf"):
        load_model(tmp_path / "nan.pt", arch="smallcnn", dataset=DS, arch_kwargs={"width": 4})
    save_checkpoint(tmp_path / "ev.pt", model, dataset=DS, defense="standard")
    raw = torch.load(tmp_path / "ev.pt", weights_only=True)
    raw["state_dict"]["layer1.0.weight"][0, 0, 0, 0] = float("inf")
    torch.save(raw, tmp_path / "ev_inf.pt")
    with pytest.raises(CheckpointError, match="'layer1.0.weight'"):
        load_any(tmp_path / "ev_inf.pt")
    bad = {
        k: v.clone()
        for k, v in load_any(f"{factory_file}:holder", dataset=DS)[0].state_dict().items()
    }
    bad["head.weight"][0, 0] = float("nan")
    torch.save(bad, tmp_path / "hold_nan.pt")
    with pytest.raises(CheckpointError, match="'head.weight'"):
        load_any(f"{factory_file}:holder", ckpt=tmp_path / "hold_nan.pt", dataset=DS)


@pytest.mark.parametrize(
    "prefix",
    [
        "module.",
        "_orig_mod.",
        "model.",
        "_orig_mod.module.",
        "module._orig_mod.",
        "module._orig_mod.model.",
        "model.module._orig_mod.",
    ],
)
def test_wrapper_prefixes_in_any_nesting(tmp_path, prefix):
    model = _smallcnn()
    torch.save({prefix + k: v for k, v in model.state_dict().items()}, tmp_path / "p.pt")
    loaded, _ = load_model(tmp_path / "p.pt", arch="smallcnn", dataset=DS, arch_kwargs={"width": 4})
    assert torch.equal(loaded(_x()), model(_x()))


def test_real_model_prefix_survives_stripping():
    w = torch.zeros(1)
    expected = {"model.conv.weight", "head.weight"}
    out = strip_wrapper_prefixes({"module.model.conv.weight": w, "module.head.weight": w}, expected)
    assert set(out) == expected
    out = strip_wrapper_prefixes({"model.conv.weight": w, "model.head.weight": w}, expected)
    assert set(out) == expected  # the first keeps its real `model.`, the second loses a wrapper
    with pytest.raises(CheckpointError, match="both load into"):
        strip_wrapper_prefixes({"module.head.weight": w, "head.weight": w}, expected)


def test_normalize_refused_for_checkpoint_with_its_own(tmp_path):
    model = _smallcnn(mean=[0.286], std=[0.353])
    save_checkpoint(tmp_path / "m.pt", model, dataset=DS, defense="standard")
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "m.pt", normalize=([0.5], [0.5]))
    assert "records its own input normalization" in str(err.value)
    assert "--force-normalize" in str(err.value) and "\n" not in str(err.value)
    same, _ = load_model(tmp_path / "m.pt", normalize=([0.286], [0.353]))  # same: harmless
    assert torch.equal(same(_x()), model(_x()))
    forced, meta = load_model(tmp_path / "m.pt", normalize=([0.5], [0.5]), force_normalize=True)
    assert meta.mean == [0.5] and not torch.equal(forced(_x()), model(_x()))
    with pytest.raises(CheckpointError, match="records its own"):
        load_any(tmp_path / "m.pt", normalize=([0.5], [0.5]))


@pytest.mark.parametrize("classes", [2, 3])
def test_two_and_three_class_models_load(tmp_path, classes, factory_file):
    model = _smallcnn(classes)
    save_checkpoint(tmp_path / "ev.pt", model, dataset=DS, defense="standard")
    loaded, meta = load_any(tmp_path / "ev.pt")
    assert meta["num_classes"] == classes and torch.equal(loaded(_x()), model(_x()))
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, tmp_path / "sd.pt")
    loaded, meta = load_model(
        tmp_path / "sd.pt", arch="smallcnn", dataset=DS, arch_kwargs={"width": 4}
    )
    assert meta.num_classes == classes and torch.equal(loaded(_x()), model(_x()))


def test_one_class_is_refused(tmp_path):
    sd = _smallcnn().state_dict()
    sd["linear.weight"], sd["linear.bias"] = sd["linear.weight"][:1], sd["linear.bias"][:1]
    torch.save(sd, tmp_path / "one.pt")
    with pytest.raises(CheckpointError, match=">= 2"):
        load_model(tmp_path / "one.pt", arch="smallcnn", dataset=DS, arch_kwargs={"width": 4})


def test_save_any_module_as_external_checkpoint(tmp_path, factory_file):
    spec = f"{factory_file}:holder"
    inner, _ = load_any(spec, dataset=DS)
    wrapped = wrap(inner, mean=[0.2], std=[0.5])
    save_checkpoint(tmp_path / "ext.pt", nn.DataParallel(wrapped), dataset=DS, factory=spec)
    raw = torch.load(tmp_path / "ext.pt", weights_only=True)
    assert raw["model_kind"] == "external" and raw["mean"] == [0.2] and raw["factory"] == spec
    assert all(k.startswith(("model.", "head.")) for k in raw["state_dict"])  # inner's own keys
    with pytest.raises(CheckpointError, match="outside evalkit's registry"):
        load_model(tmp_path / "ext.pt")
    loaded, meta = load_any(spec, ckpt=tmp_path / "ext.pt")  # shape and normalization recorded
    assert meta["mean"] == [0.2] and meta["input_shape"] == [1, 28, 28]
    assert torch.allclose(loaded(_x()), wrapped(_x()), atol=1e-6)
    with pytest.raises(CheckpointError, match="records its own"):
        load_any(spec, ckpt=tmp_path / "ext.pt", normalize=([0.0], [1.0]))


def test_save_unwraps_data_parallel_for_registry_models(tmp_path):
    model = _smallcnn()
    save_checkpoint(tmp_path / "dp.pt", nn.DataParallel(model), dataset=DS, defense="standard")
    raw = torch.load(tmp_path / "dp.pt", weights_only=True)
    assert raw["arch"] == "smallcnn" and not any(k.startswith("module.") for k in raw["state_dict"])


def test_torchscript_archive_with_a_python_pickle_does_not_run_it(tmp_path):
    torch.jit.trace(_smallcnn(), _x(2)).save(str(tmp_path / "clean.pt"))
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(tmp_path / "clean.pt") as src, zipfile.ZipFile(evil, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                data = pickle.dumps(_Payload(marker), protocol=2)
            dst.writestr(info, data)
    with pytest.raises(CheckpointError, match="bad TorchScript archive"):
        load_any(evil, dataset=DS)
    assert not marker.exists()


def test_defense_params_reach_the_plugin_and_meta_reads_as_attributes(tmp_path, factory_file):
    save_checkpoint(tmp_path / "m.pt", _smallcnn(), dataset=DS, defense="standard")
    model, meta = load_any(tmp_path / "m.pt", defense="sap", params={"sap_frac": 0.5})
    fracs = {m.frac for m in model.modules() if hasattr(m, "frac")}
    assert fracs == {0.5} and meta.defense == "sap"
    assert meta.defense_params["sap_frac"] == 0.5 and meta.num_classes == meta["num_classes"]
    assert isinstance(meta.describe(), dict) and not hasattr(meta, "no_such_key")
    with pytest.raises(EvalkitError, match="evalkit architectures only"):
        load_any(f"{factory_file}:holder", dataset=DS, defense="sap")
