"""Whole classes of bad input (issue 10): each is a one-line error, from the Python API
(:class:`~evalkit.errors.EvalkitError`) and from ``evalkit attack`` (exit 2, one line on stderr),
or is handled so that it cannot change the answer silently."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from helpers import QUIET, one_line, run_cli

from evalkit.checkpoint import load_model, save_checkpoint
from evalkit.data import load_split
from evalkit.errors import CheckpointError, EvalkitError
from evalkit.evaluation import evaluate

pytestmark = pytest.mark.usefixtures("one_thread")


def _api_error(**kw) -> str:
    with pytest.raises(EvalkitError) as info:
        evaluate(**kw)
    msg = str(info.value)
    assert one_line(msg), msg
    return msg


# --------------------------------------------------------------------- numeric options

NUMERIC = [
    # (CLI flags, API keywords, text in the CLI error, text in the API error)
    (["--n", "-250"], {"n": -250}, "--n: must be >= 1", "n must be an integer >= 1"),
    (["--n", "0"], {"n": 0}, "--n: must be >= 1", "n must be an integer >= 1"),
    (["--n", "2.5"], {"n": 2.5}, "is not an integer", "n must be an integer >= 1"),
    (["--n-examples", "-3"], {"n": -3}, "must be >= 1", "n must be an integer >= 1"),
    (["--batch-size", "0"], {"batch_size": 0}, "--batch-size: must be >= 1", "batch_size must"),
    (["--mc-draws", "0"], {"mc_draws": 0}, "--mc-draws: must be >= 1", "mc_draws must"),
    (["--eot", "0"], {"eot": 0}, "--eot: must be >= 1", "eot must"),
    (["--seed", "-1"], {"seed": -1}, "seed must be an integer >= 0", "seed must"),
    (["--eps", "nan"], {"eps": "nan"}, "eps nan is out of range", "eps nan is out of range"),
    (["--eps", "inf"], {"eps": "inf"}, "eps inf is out of range", "eps inf is out of range"),
    (["--eps", "-1"], {"eps": "-1"}, "eps -1 is out of range", "eps -1 is out of range"),
    (["--eps", "0"], {"eps": 0.0}, "eps 0 is out of range", "is out of range"),
    (["--eps", "2"], {"eps": "2"}, "must be in (0, 1]", "must be in (0, 1]"),
    (["--eps", "1/0"], {"eps": "1/0"}, "cannot read eps", "cannot read eps"),
    (["--eps", "8/255,8/255"], {"eps": "8/255,8/255"}, "given twice", "given twice"),
    (
        ["--norm", "l2", "--eps", "100"],
        {"norm": "l2", "eps": 100},
        "the diameter of the input",
        "(0, 28]",
    ),
    (["--norm", "l3"], {"norm": "l3"}, "norm must be linf or l2", "norm must be linf or l2"),
    (["--loss", "mse"], {"loss": "mse"}, "loss must be ce, cw or dlr", "loss must be"),
    (["--preset", "nosuch"], {"preset": "nosuch"}, "unknown preset", "unknown preset"),
]


@pytest.mark.parametrize(("flags", "kw", "cli_text", "api_text"), NUMERIC)
def test_numeric_options_are_checked(ev_ckpt, tmp_path, capsys, flags, kw, cli_text, api_text):
    out = tmp_path / "run"
    argv = ["attack", "--ckpt", ev_ckpt, "--out", str(out), "--attacks", "pgd"]
    rc, err = run_cli([*argv, "--no-progress", "--device", "cpu", *flags], capsys)
    assert rc == 2 and cli_text in err, err
    assert one_line(err), err
    assert not (out / "summary.json").exists()
    msg = _api_error(model=ev_ckpt, attacks="pgd", **{**QUIET, **kw})
    assert api_text in msg, msg


def test_python_numbers_of_the_wrong_kind_are_refused(ev_ckpt):
    for kw in ({"n": True}, {"batch_size": float("nan")}, {"mc_draws": "many"}, {"eps": True}):
        _api_error(model=ev_ckpt, attacks="fgsm", **{**QUIET, **kw})
    assert "integer" in _api_error(model=ev_ckpt, attacks="fgsm", n=float("inf"), **QUIET)


def test_l2_budgets_above_one_are_normal(ev_ckpt, tmp_path, capsys):
    """--norm l2 --eps 2 on 1x28x28 images (diameter 28) runs; the perturbations stay inside."""
    out = tmp_path / "run"
    argv = ["attack", "--ckpt", ev_ckpt, "--out", str(out), "--norm", "l2", "--eps", "2"]
    argv += ["--attacks", "pgd", "--n", "8", "--no-sanity", "--no-progress", "--device", "cpu"]
    rc, err = run_cli(argv, capsys)
    assert rc == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["protocol"]["norm"] == "l2" and summary["protocol"]["eps"] == ["2"]
    r = summary["results"][0]
    assert r["norm"] == "l2" and r["eps_value"] == 2.0
    assert 0 < r["max_norm"] <= 2 + 1e-5
    # just inside and just outside the diameter
    assert evaluate(ev_ckpt, norm="l2", eps=28, attacks="pgd", n=2, sanity=False, **QUIET)
    assert "(0, 28]" in _api_error(model=ev_ckpt, norm="l2", eps=28.01, attacks="pgd", **QUIET)


def test_l2_without_eps_uses_its_own_default(ev_ckpt):
    """--norm l2 without --eps used the Linf default 8/255; now 0.5, and the summary says so."""
    summary = evaluate(ev_ckpt, norm="l2", attacks="pgd", n=4, sanity=False, **QUIET).summary
    assert summary["protocol"]["eps"] == ["0.5"]
    assert summary["worst_case"][0]["eps_value"] == 0.5
    assert summary["results"][0]["eps"] == "0.5" and summary["results"][0]["norm"] == "l2"


# -------------------------------------------------------------------------- weights


@pytest.fixture(scope="module")
def nan_ckpt(ev_ckpt, tmp_path_factory) -> Path:
    model, meta = load_model(ev_ckpt)
    with torch.no_grad():
        model.linear.weight[3, 5] = float("nan")
    path = tmp_path_factory.mktemp("nan") / "diverged.pt"
    save_checkpoint(path, model, dataset=meta.dataset, input_size=meta.input_size)
    return path


def test_nan_weights_are_refused_naming_the_tensor(nan_ckpt, tmp_path, capsys):
    with pytest.raises(CheckpointError) as info:
        evaluate(nan_ckpt, attacks="fgsm", **QUIET)
    msg = str(info.value)
    assert one_line(msg), msg
    assert "'linear.weight'" in msg and "NaN/inf" in msg
    rc, err = run_cli(["attack", "--ckpt", str(nan_ckpt), "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and "'linear.weight'" in err
    assert one_line(err), err


def test_a_module_with_nan_weights_is_refused(ev_ckpt):
    model, _ = load_model(ev_ckpt)
    with torch.no_grad():
        model.linear.bias[0] = float("inf")
    data = load_split("fashion-mnist-mini", "test").first(8)
    msg = _api_error(model=model, data=(data.x, data.y), attacks="fgsm", **QUIET)
    assert "NaN/inf" in msg


# --------------------------------------------------------------------------- logits


class NaNOnBright(nn.Module):
    """Finite logits unless the first pixel is above 0.9, then NaN in every logit."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.lin(x.flatten(1))
        bad = x[:, 0, 0, 0] > 0.9
        return torch.where(bad[:, None], torch.full_like(z, float("nan")), z)


def test_nan_logits_never_count_as_correct():
    """A diverged model's NaN logits argmax to class 0; label-0 points must not score."""
    model = NaNOnBright()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(32, 1, 8, 8, generator=g) * 0.8
    x[20:, 0, 0, 0] = 0.95  # points 20..31 give NaN logits (the first 16 are a clean probe)
    with torch.no_grad():
        y = model.lin(x.flatten(1)).argmax(1)
    y[20:] = 0  # where argmax(NaN) = 0 would call them correct
    assert (model(x[20:]).argmax(1) == 0).all()  # the trap is real
    result = evaluate(model, (x, y), attacks="fgsm", eps="1/255", sanity=False, **QUIET)
    df, summary = result.examples, result.summary
    assert (df.loc[20:, "clean_p"] == 0).all() and (df.loc[20:, "clean_pred"] == -2).all()
    assert df.loc[20:, "clean_margin"].isna().all()
    assert summary["clean_accuracy"] <= 20 / 32
    assert summary["nonfinite_clean_logits"] == 12
    flag = next(f for f in summary["flags"] if f["id"] == "nonfinite_logits")
    assert flag["severity"] == "warning" and "12 clean" in flag["message"]
    assert (df.loc[20:, "worst@1/255:broken_by"] == "clean").all()


class Probabilities(nn.Module):
    def __init__(self, in_features: int = 64, classes: int = 3) -> None:
        super().__init__()
        self.lin = nn.Linear(in_features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1)).softmax(1)


def test_probability_outputs_get_a_one_line_message(tmp_path, capsys):
    x = torch.rand(8, 1, 8, 8)
    y = torch.zeros(8, dtype=torch.long)
    msg = _api_error(model=Probabilities(), data=(x, y), attacks="fgsm", **QUIET)
    assert "probabilities" in msg and "logits" in msg
    # the same from the CLI, with the model in a module file outside the package
    src = tmp_path / "prob_net.py"
    src.write_text(
        "import torch.nn as nn\n\n\n"
        "def build():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.Softmax(dim=1))\n"
    )
    argv = ["attack", "--model", f"{src}:build", "--dataset", "fashion-mnist-mini", "--n", "4"]
    rc, err = run_cli([*argv, "--out", str(tmp_path / "r"), "--device", "cpu"], capsys)
    assert rc == 2 and "probabilities" in err and "--output log" in err, err
    assert one_line(err), err
    # the fix the message names works from the CLI and from the API; a bad mode is one line too
    rc, err = run_cli([*argv, "--output", "bogus", "--out", str(tmp_path / "b")], capsys)
    assert rc == 2 and "output mode" in err and one_line(err), err
    fixed = [*argv, "--output", "log", "--attacks", "fgsm", "--no-sanity", "--no-progress"]
    rc, err = run_cli([*fixed, "--out", str(tmp_path / "ok"), "--device", "cpu"], capsys)
    assert rc == 0, err
    summary = json.loads((tmp_path / "ok" / "summary.json").read_text())
    assert summary["clean_accuracy"] is not None
    res = evaluate(Probabilities(), (x, y), attacks="fgsm", output="log", **QUIET)
    assert 0.0 <= res.clean_accuracy <= 1.0


def test_non_logit_outputs_are_refused():
    x = torch.rand(4, 1, 8, 8)
    y = torch.zeros(4, dtype=torch.long)

    class One(nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :1]

    class Pair(nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :3], x.flatten(1)[:, :3]

    assert ">= 2" in _api_error(model=One(), data=(x, y), attacks="fgsm", **QUIET)
    _api_error(model=Pair(), data=(x, y), attacks="fgsm", **QUIET)


def test_a_module_that_fails_on_the_data_is_one_line():
    """Data of the wrong shape for a Python module: the model's own exception becomes one line."""
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.LazyLinear(3))
    x = torch.rand(4, 3, 8, 8)  # 3 channels into a 1-channel conv
    y = torch.zeros(4, dtype=torch.long)
    msg = _api_error(model=net, data=(x, y), attacks="fgsm", **QUIET)
    assert "(4, 3, 8, 8)" in msg


# ------------------------------------------------------------------------- classes


def _few_class_net(k: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    with torch.random.fork_rng():
        torch.manual_seed(k)
        net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, k))
        x = torch.rand(8, 1, 8, 8)
    with torch.no_grad():
        y = net(x).argmax(1)
    return net, x, y


# sub-attacks each (classes, preset) must skip: AutoAttack standard's APGD-T reads the 4th
# largest logit (>= 4 classes); the fast preset's APGD-DLR the 3rd (>= 3 classes)
SKIPS = {
    (2, "default"): {"apgd-t"},
    (3, "default"): {"apgd-t"},
    (2, "fast"): {"apgd-dlr"},
    (3, "fast"): set(),
}


@pytest.mark.parametrize(("k", "preset"), list(SKIPS))
def test_two_and_three_class_models_run_every_preset(k, preset):
    """A 2- or 3-class model crashed with an IndexError in DLR/AutoAttack (which read the 3rd
    and 4th largest logits). Now it runs; the sub-attacks that need more classes are skipped
    and the summary records why, and nothing else is skipped."""
    net, x, y = _few_class_net(k)
    summary = evaluate(net, (x, y), preset=preset, eps="4/255", sanity=False, **QUIET).summary
    assert summary["n_examples"] == 8 and summary["traits"]["num_classes"] == k
    assert len(summary["per_class"]) == k
    aa = next(r for r in summary["results"] if r["attack"].startswith("autoattack"))
    assert aa["n_attacked"] > 0
    skipped = (aa.get("details") or {}).get("skipped", {})
    assert set(skipped) == SKIPS[(k, preset)], aa
    assert all(f"the model has {k}" in why for why in skipped.values()), skipped
    assert not set(skipped) & set(aa["details"].get("ran", []))


def test_dlr_loss_on_two_classes_adapts_with_a_reason():
    net, x, y = _few_class_net(2)
    summary = evaluate(net, (x, y), attacks="pgd", loss="dlr", sanity=False, **QUIET).summary
    plan = summary["protocol"]["attacks"][0]
    assert plan["loss"] == "cw" and "3 classes" in plan["adaptive"]
    assert summary["results"][0]["loss"] == "cw"


def test_labels_and_images_out_of_range_are_refused(ev_ckpt):
    data = load_split("fashion-mnist-mini", "test").first(8)
    x = data.float_batch(slice(0, 8))
    bad_y = data.y.clone()
    bad_y[0] = 10
    assert "labels range" in _api_error(model=ev_ckpt, data=(x, bad_y), attacks="fgsm", **QUIET)
    normalized = (x - 0.5) / 0.25
    msg = _api_error(model=ev_ckpt, data=(normalized, data.y), attacks="fgsm", **QUIET)
    assert "[0, 1]" in msg
    msg = _api_error(model=ev_ckpt, data=(x, data.y.float()), attacks="fgsm", **QUIET)
    assert "integer" in msg


# ------------------------------------------------------------------- normalization


def test_normalize_on_a_checkpoint_that_records_it_is_refused_unless_forced(
    ev_ckpt, tmp_path, capsys
):
    msg = _api_error(model=ev_ckpt, normalize="0.5,0.5", attacks="fgsm", n=4, **QUIET)
    assert "records its own input normalization" in msg and "force" in msg
    argv = ["attack", "--ckpt", ev_ckpt, "--normalize", "0.5,0.5", "--attacks", "fgsm"]
    argv += ["--n", "4", "--no-sanity", "--no-progress", "--device", "cpu"]
    rc, err = run_cli([*argv, "--out", str(tmp_path / "a")], capsys)
    assert rc == 2 and "--force-normalize" in err
    assert one_line(err), err
    # the same normalization as recorded is no change, so it is accepted
    _, meta = load_model(ev_ckpt)
    same = f"{meta.mean[0]},{meta.std[0]}"
    assert evaluate(ev_ckpt, normalize=same, attacks="fgsm", n=4, sanity=False, **QUIET)
    # forced: it replaces the recorded one, and the summary shows the replacement
    rc, err = run_cli([*argv, "--force-normalize", "--out", str(tmp_path / "b")], capsys)
    assert rc == 0, err
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["model"]["mean"] == [0.5] and summary["model"]["std"] == [0.5]


def test_unreadable_normalize_is_one_line(ev_ckpt):
    assert "cannot read normalize" in _api_error(model=ev_ckpt, normalize="abc", **QUIET)
    assert "positive" in _api_error(model=ev_ckpt, normalize="0.5,0", **QUIET)


# ---------------------------------------------------------------- wrapper prefixes

# torch.compile(nn.DataParallel(m)).state_dict() keys start with "_orig_mod.module." (checked
# by hand; compiling in the test would cost seconds); Lightning adds "model."
PREFIXES = ["module.", "_orig_mod.module.", "module._orig_mod.", "model._orig_mod.module."]


@pytest.mark.parametrize("prefix", PREFIXES)
def test_wrapper_prefixes_in_any_nesting_load(ev_ckpt, tmp_path, prefix):
    obj = torch.load(ev_ckpt, weights_only=True)
    obj["state_dict"] = {prefix + k: v for k, v in obj["state_dict"].items()}
    path = tmp_path / "wrapped.pt"
    torch.save(obj, path)
    wrapped = evaluate(path, attacks="fgsm", n=16, sanity=False, **QUIET).examples
    plain = evaluate(ev_ckpt, attacks="fgsm", n=16, sanity=False, **QUIET).examples
    assert wrapped["clean_pred"].tolist() == plain["clean_pred"].tolist()
    assert wrapped["clean_margin"].tolist() == pytest.approx(plain["clean_margin"].tolist())


def test_prefixed_plain_state_dict_loads_from_the_cli(tmp_path, capsys):
    """A plain state_dict (no metadata) saved from torch.compile over DataParallel."""
    from evalkit.models import build_model

    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = build_model("smallcnn", num_classes=10, in_channels=1).eval()
    path = tmp_path / "compiled_dp.pt"
    torch.save({"_orig_mod.module." + k: v for k, v in net.state_dict().items()}, path)
    out = tmp_path / "run"
    argv = ["attack", "--ckpt", str(path), "--arch", "smallcnn", "--dataset", "fashion-mnist-mini"]
    argv += ["--attacks", "fgsm", "--n", "8", "--no-sanity", "--no-progress", "--device", "cpu"]
    rc, err = run_cli([*argv, "--out", str(out)], capsys)
    assert rc == 0, err
    data = load_split("fashion-mnist-mini", "test").first(8)
    with torch.no_grad():
        pred = net(data.float_batch(slice(0, 8))).argmax(1)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["clean_accuracy"] == pytest.approx(float((pred == data.y).float().mean()))
    assert math.isfinite(summary["worst_case"][0]["robust_accuracy"])
