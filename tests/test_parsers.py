"""One parser per value (issue 20): each CLI flag form and its Python API twin go through
the same parser and give the same value, or the same one-line error.

Expected values are written out here as literals (``8 / 255`` is Python's own correctly
rounded division), not computed by the code under test, so a parser that drifts fails.
"""

from __future__ import annotations

import pandas as pd
import pytest
from helpers import QUIET, one_line, run_cli

from evalkit.analyses import eps_list, single_eps
from evalkit.cli import build_parser
from evalkit.errors import EvalkitError
from evalkit.evaluation import ModelSource, evaluate, parse_budgets
from evalkit.training.api import make_config
from evalkit.utils.parse import parse_eps, parse_eps_items, parse_normalize

NAN, INF = float("nan"), float("inf")


def _error(fn, *args, **kw) -> str:
    with pytest.raises(EvalkitError) as info:
        fn(*args, **kw)
    msg = str(info.value)
    assert one_line(msg), msg
    return msg


def _cli_value(flag: str, text: str) -> str | None:
    """What argparse hands the command for ``flag text`` (the CLI adds no parsing of its own)."""
    args = build_parser().parse_args(["attack", "--ckpt", "m.pt", flag, text])
    return getattr(args, flag.lstrip("-").replace("-", "_"))


# ---------------------------------------------------------------------------- normalization

CIFAR = ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616])
NORMALIZE_OK = [
    # (CLI text, API twin, expected (mean, std))
    ("0.5,0.25", ([0.5], [0.25]), ([0.5], [0.25])),
    (" 0.5 , 0.25 ", (0.5, 0.25), ([0.5], [0.25])),
    ("0.5;0.25", [[0.5], [0.25]], ([0.5], [0.25])),
    ("0.4914,0.4822,0.4465;0.2470,0.2435,0.2616", CIFAR, CIFAR),
    ("0.1,0.2,0.3;0.5", ([0.1, 0.2, 0.3], 0.5), ([0.1, 0.2, 0.3], [0.5])),
    ("", None, None),
]
NORMALIZE_BAD = [
    # (CLI text, API twin, text in both errors)
    ("0.5", 0.5, "cannot read normalize"),  # a lone number is no documented form
    ("abc", ("abc", "0.5"), "cannot read normalize"),
    ("0.5,abc", ([0.5], ["abc"]), "cannot read normalize"),
    ("0.5,0.2,0.3", (0.5, 0.2, 0.3), "cannot read normalize"),
    ("0.5,0", ([0.5], [0.0]), "positive finite stds"),
    ("0.5,-0.2", ([0.5], [-0.2]), "positive finite stds"),
    ("nan,0.5", ([NAN], [0.5]), "finite means"),
    ("0.5,nan", ([0.5], [NAN]), "positive finite stds"),
    ("0.5,inf", ([0.5], [INF]), "positive finite stds"),
    ("0.1,0.2;0.1,0.2,0.3", ([0.1, 0.2], [0.1, 0.2, 0.3]), "2 means but 3 stds"),
]


@pytest.mark.parametrize(("cli", "api", "expected"), NORMALIZE_OK)
def test_normalize_forms_agree(cli, api, expected):
    assert parse_normalize(_cli_value("--normalize", cli)) == expected
    assert parse_normalize(cli) == expected
    assert parse_normalize(api) == expected
    assert ModelSource(normalize=api).normalize == expected  # evaluate(normalize=) / source=
    assert ModelSource.from_options({"normalize": cli}).normalize == expected


@pytest.mark.parametrize(("cli", "api", "text"), NORMALIZE_BAD)
def test_normalize_errors_agree(cli, api, text):
    from_cli = _error(parse_normalize, _cli_value("--normalize", cli))
    assert text in from_cli, from_cli
    assert _error(parse_normalize, cli) == from_cli  # the API given the same text
    assert text in _error(parse_normalize, api)
    assert _error(ModelSource, normalize=cli) == from_cli


@pytest.mark.parametrize(("cli", "text"), [(c, t) for c, _, t in NORMALIZE_BAD[:5]])
def test_normalize_errors_end_to_end(ev_ckpt, tmp_path, capsys, cli, text):
    """``evalkit attack --normalize`` and ``evaluate(normalize=)``: the same one line."""
    argv = ["attack", "--ckpt", ev_ckpt, "--out", str(tmp_path / "r"), "--attacks", "fgsm"]
    rc, err = run_cli([*argv, "--no-progress", "--device", "cpu", "--normalize", cli], capsys)
    assert rc == 2 and text in err and one_line(err), err
    msg = _error(evaluate, model=ev_ckpt, attacks="fgsm", normalize=cli, **QUIET)
    assert msg in err, (msg, err)


# ---------------------------------------------------------------------- model-loading options


def test_model_source_and_keywords_are_one_thing(ev_ckpt):
    """``evaluate(path, source=ModelSource(...))`` and the same fields as keywords load the same
    model (keywords override the object's fields); unknown names get the closest one."""
    kw = dict(attacks="fgsm", eps="8/255", n=16, sanity=False, **QUIET)
    opts = {"defense": "bitdepth", "params": {"bitdepth_bits": 2}}
    by_keywords = evaluate(ev_ckpt, **opts, **kw)
    by_object = evaluate(ev_ckpt, source=ModelSource(**opts), **kw)
    plain = evaluate(ev_ckpt, **kw)
    assert by_object.summary["model"] == by_keywords.summary["model"] != plain.summary["model"]
    pd.testing.assert_frame_equal(by_object.examples, by_keywords.examples)
    base = ModelSource(defense="sap", weights_set="ema")
    assert ModelSource.from_options({"weights_set": "raw"}, base=base) == ModelSource(
        defense="sap", weights_set="raw"
    )
    msg = _error(evaluate, ev_ckpt, wieghts_set="ema", **kw)
    assert "unknown option 'wieghts_set'" in msg and "did you mean 'weights_set'" in msg
    assert _error(evaluate, ev_ckpt, weights_set="emaa", **kw) == _error(
        evaluate, ev_ckpt, source=ModelSource.from_options({}), weights_set="emaa", **kw
    )
    assert "weights_set must be 'ema' or 'raw'" in _error(ModelSource, weights_set="emaa")


# ------------------------------------------------------------------------------------ eps

EPS_OK = [
    # (text or number, norm, expected [(label, value)])
    ("8/255", "linf", [("8/255", 8 / 255)]),
    ("8/255,4/255", "linf", [("8/255", 8 / 255), ("4/255", 4 / 255)]),
    (" 2/255 , 8/255 ", "linf", [("2/255", 2 / 255), ("8/255", 8 / 255)]),
    ("0.031", "linf", [("0.031", 0.031)]),
    (0.031, "linf", [("0.031", 0.031)]),
    (["8/255", 0.5], "linf", [("8/255", 8 / 255), ("0.5", 0.5)]),
    ("1", "linf", [("1", 1.0)]),
    ("0.5", "l2", [("0.5", 0.5)]),
    ("2", "l2", [("2", 2.0)]),
    ("28", "l2", [("28", 28.0)]),  # the diameter of a 1x28x28 image
    ("128/255", "L2", [("128/255", 128 / 255)]),
    ("0.5/255", "linf", [("0.5/255", 0.5 / 255)]),  # a fractional numerator, as in 0.5/255
]
EPS_BAD = [
    # (text or number, norm, text in every parser's error)
    ("nan", "linf", "eps nan is out of range for linf"),
    ("inf", "linf", "eps inf is out of range"),
    ("-1", "linf", "eps -1 is out of range"),
    ("0", "linf", "eps 0 is out of range"),
    (0.0, "linf", "eps 0 is out of range"),
    ("2", "linf", "must be in (0, 1]: pixels live in [0, 1] (did you mean 2/255?)"),
    ("1/0", "linf", "cannot read eps '1/0'"),
    ("abc", "linf", "cannot read eps 'abc'"),
    ("1/2/3", "linf", "cannot read eps '1/2/3'"),
    (True, "linf", "cannot read eps True"),
    ("8/255,8/255", "linf", "eps 8/255 is given twice"),
    (",", "linf", "eps is empty"),
    ("nan", "l2", "eps nan is out of range for l2"),
    ("29", "l2", "(0, 28], the diameter of the input"),
    ("0", "l2", "eps 0 is out of range for l2"),
    ("8/255", "l3", "norm must be linf or l2"),
]
SHAPE = (1, 28, 28)


def _single(raw) -> bool:
    return not isinstance(raw, list) and "," not in str(raw)


@pytest.mark.parametrize(("raw", "norm", "expected"), EPS_OK)
def test_eps_forms_agree(raw, norm, expected):
    budgets = parse_budgets(raw, norm, input_shape=SHAPE)
    assert [(b.label, b.value) for b in budgets] == expected  # exact floats
    assert {b.norm for b in budgets} == {norm.lower()}
    assert parse_eps_items(raw, norm, input_shape=SHAPE) == expected
    if norm == "linf":
        assert eps_list(raw, "8/255") == budgets  # analyses get the same Budget values
    if _single(raw):
        assert parse_eps(raw, norm=norm, input_shape=SHAPE) == expected[0][1]
        if norm == "linf":
            assert single_eps(raw) == expected[0][1]
            assert _train_eps(raw) == expected[0][1]  # train(eps=...) and --eps of evalkit train
    if isinstance(raw, str):
        assert parse_budgets(_cli_value("--eps", raw), norm, input_shape=SHAPE) == budgets


@pytest.mark.parametrize(("raw", "norm", "text"), EPS_BAD)
def test_eps_errors_agree(raw, norm, text):
    msg = _error(parse_budgets, raw, norm, input_shape=SHAPE)
    assert text in msg, msg
    assert _error(parse_eps_items, raw, norm, input_shape=SHAPE) == msg
    if norm == "linf":
        assert _error(eps_list, raw, "8/255") == msg
    if _single(raw) and str(raw).strip(", "):
        assert _error(parse_eps, raw, norm=norm, input_shape=SHAPE) == msg
        if norm == "linf":
            assert _error(single_eps, raw) == msg
            assert _error(_train_eps, raw) == f"train(): eps: {msg}"


def _train_eps(raw) -> float:
    """The eps train() would train at (the CLI passes --eps through unparsed)."""
    cfg = make_config(dataset="fashion-mnist-mini", arch="smallcnn", epochs=1, out="x", eps=raw)
    return cfg.eps


def test_eps_defaults_per_norm():
    assert parse_budgets(None, "linf") == parse_budgets("8/255", "linf")
    assert parse_budgets(None, "l2") == parse_budgets("0.5", "l2")
    assert parse_budgets(None, "linf", preset_eps="4/255")[0].value == 4 / 255
    assert eps_list(None, "2/255,4/255") == parse_budgets("2/255,4/255", "linf")
    assert [(b.label, b.value) for b in eps_list(None, "2/255,4/255")] == [
        ("2/255", 2 / 255),
        ("4/255", 4 / 255),
    ]


def test_step_sizes_may_be_zero_only_when_asked():
    assert parse_eps("0", allow_zero=True) == 0.0
    assert "[0, 1]" in _error(parse_eps, "-1", allow_zero=True)
    assert parse_eps("1/255", allow_zero=True) == 1 / 255


# ------------------------------------------------------------------------------ KEY=VALUE

PARAMS_OK = [
    # (--param / --option text, the value every command hands the API)
    ("sap_frac=0.5", {"sap_frac": 0.5}),
    ("cas_beta=2", {"cas_beta": 2}),
    ("cifs_adaptive=true", {"cifs_adaptive": True}),
    ("cifs_adaptive=False", {"cifs_adaptive": False}),
    ("lr=1e-3", {"lr": 0.001}),
    (" layer = block2 ", {"layer": "block2"}),
    ("spec=a=b", {"spec": "a=b"}),
]
PARAMS_BAD = [
    # (text, what every command's one-line error says)
    ("sap_frac", "must be KEY=VALUE"),
    ("=0.5", "must be KEY=VALUE"),
    ("sap_frac=nan", "sap_frac=nan: the value 'nan' must be a finite number"),
    ("sap_frac=inf", "sap_frac=inf: the value 'inf' must be a finite number"),
]


def _captured(monkeypatch, module: str, fn: str, argv: list[str]) -> dict:
    """The keyword arguments the command ``argv`` hands its API function (not run)."""
    import importlib

    seen: dict = {}

    class Called(BaseException):  # not SystemExit: an argparse error must not pass for a call
        pass

    def capture(*args, **kw):
        seen.update(kw)
        raise Called

    monkeypatch.setattr(importlib.import_module(module), fn, capture)
    from evalkit.cli import main

    with pytest.raises(Called):
        main(argv)
    return seen


def _commands(item: str) -> dict[str, list[str]]:
    return {
        "attack": ["attack", "--ckpt", "m.pt", "--param", item],
        "train": ["train", "--dataset", "fashion-mnist-mini", "--out", "x", "--param", item],
        "analyze": ["analyze", "--ckpt", "m.pt", "--out", "x", "--analysis", "channels"]
        + ["--option", item],
    }


@pytest.mark.parametrize(("item", "expected"), PARAMS_OK)
def test_key_value_flags_agree(monkeypatch, item, expected):
    """``attack --param``, ``train --param`` and ``analyze --option`` read a value alike (they
    once disagreed: ``true`` a bool for one and a string for the others, ``nan`` accepted by
    two)."""
    from evalkit.utils.parse import parse_key_values

    assert parse_key_values([item]) == expected
    argv = _commands(item)
    attack = _captured(monkeypatch, "evalkit.evaluation.api", "evaluate", argv["attack"])
    assert attack["source"].params == expected  # evaluate(source=ModelSource(params=...))
    assert (
        _captured(monkeypatch, "evalkit.commands.train", "train", argv["train"])["params"]
        == expected
    )
    got = _captured(monkeypatch, "evalkit.analyses", "analyze", argv["analyze"])
    assert {k: got[k] for k in expected} == expected


@pytest.mark.parametrize(("item", "text"), PARAMS_BAD)
def test_key_value_errors_agree(capsys, item, text):
    from evalkit.utils.parse import parse_key_values

    assert text in _error(parse_key_values, [item])
    for name, argv in _commands(item).items():
        rc, err = run_cli(argv, capsys)
        assert rc == 2 and text in err and one_line(err), (name, err)
    assert "given twice" in _error(parse_key_values, ["a=1", "a=2"])


def test_analyze_takes_the_model_source(ev_ckpt, tmp_path):
    """``analyze(source=ModelSource(...))`` and the same fields as keywords are one thing; a
    field analyze cannot honour is named, not dropped."""
    from evalkit.analyses import analyze

    ckpt = ev_ckpt
    kw = dict(analysis="channels", n=8, eps="8/255", steps=1, progress=False)
    by_kw = analyze(ckpt, out=tmp_path / "a", defense="sap", **kw)
    by_obj = analyze(ckpt, out=tmp_path / "b", source=ModelSource(defense="sap"), **kw)
    plain = analyze(ckpt, out=tmp_path / "c", **kw)
    assert by_kw.scalars == by_obj.scalars
    assert by_kw.doc["models"] == by_obj.doc["models"] != plain.doc["models"]
    assert "model_dir" in _error(analyze, ckpt, model_dir="m", **kw)
    msg = _error(analyze, ckpt, wieghts_set="ema", **kw)
    assert "did you mean 'weights_set'" in msg
