"""Options shared by several subcommands (model/data/device), so they read the same everywhere."""

from __future__ import annotations

import argparse
from typing import Any

from evalkit.utils.parse import parse_key_values


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (so ``--n -250`` is an error, not 6 points)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_device_seed(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N] (default: auto)"
    )
    p.add_argument("--seed", type=int, default=0, help="global random seed (default: 0)")


def add_model_options(
    p: argparse.ArgumentParser, *, multiple: bool = False, model_spec: bool = False
) -> None:
    """--ckpt plus what a foreign state_dict needs (--arch, --dataset, --normalize) and --defense;
    with ``model_spec`` also --model (any architecture), --force-normalize, --output and
    --param."""
    if model_spec:
        p.add_argument(
            "--ckpt",
            default=None,
            metavar="PATH",
            help="checkpoint: evalkit .pt, plain state_dict .pt/.safetensors (with --arch or "
            "--model), TorchScript .pt, torch.export .pt2, or a folder holding one (default: "
            "none; give --ckpt or --model)",
        )
        p.add_argument(
            "--model",
            default=None,
            metavar="SPEC",
            help="build the model yourself: pkg.module:factory or path/to/file.py:factory "
            "(weights from --ckpt), or robustbench:DATASET/THREAT/NAME (offline, from "
            "--model-dir) (default: none; the model comes from --ckpt)",
        )
        p.add_argument(
            "--model-dir",
            default=None,
            metavar="DIR",
            help="RobustBench's model folder for robustbench: ids, holding "
            "DATASET/THREAT/NAME.pt (default: ./models)",
        )
        p.add_argument(
            "--force-normalize",
            action="store_true",
            help="let --normalize replace the normalization a checkpoint records",
        )
        p.add_argument(
            "--output",
            default="auto",
            metavar="MODE",
            help="how to read a --model's logits: auto (default), first (tuple/list output), "
            "key:NAME (dict output) or log (the model returns probabilities)",
        )
        p.add_argument(
            "--param",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="defense parameter, e.g. cifs_adaptive=true or sap_frac=0.5 (repeatable; "
            "default: the checkpoint's recorded ones)",
        )
    elif multiple:
        p.add_argument(
            "--ckpt",
            action="append",
            required=True,
            metavar="PATH",
            help="checkpoint (.pt, or a folder holding one); repeat to compare several (required)",
        )
    else:
        p.add_argument(
            "--ckpt", required=True, metavar="PATH", help="checkpoint (.pt) to load (required)"
        )

    p.add_argument(
        "--arch",
        default=None,
        help="architecture of a plain (foreign) state_dict, e.g. resnet18 (default: the "
        "checkpoint's own)",
    )
    p.add_argument(
        "--dataset",
        default=None,
        help="dataset (default: the checkpoint's); for a foreign state_dict it sets the shape",
    )
    p.add_argument(
        "--normalize",
        default=None,
        metavar="MEAN,STD",
        help="input normalization of a foreign model, e.g. '0.4914,0.4822,0.4465;0.2470,0.2435,0.2616' "
        "(default: none, raw [0,1] pixels)",
    )
    p.add_argument(
        "--weights-set",
        default=None,
        choices=("ema", "raw"),
        help="which weights of a checkpoint that holds several (raw and EMA, e.g. "
        "state_dict + state_dict_ema, model + model_ema): ema or raw (default: the only set; "
        "refused when there are several)",
    )
    p.add_argument(
        "--defense",
        default=None,
        help="test-time defense added on load: sap (stochastic activation pruning), input "
        "transformations bitdepth, jpeg, median (any model; attacked with BPDA), or bpda "
        "(declare submodules non-differentiable: --param bpda_modules=NAME) (default: none)",
    )


def add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        default=None,
        metavar="FILE",
        help=".npz/.pt with x, y (uint8 or float; NCHW or NHWC), e.g. a file written by "
        "--save-adversarial (default: the test split of --dataset or the checkpoint's dataset)",
    )
    p.add_argument(
        "--data-root",
        default=None,
        help="folder holding the dataset files (default: the dataset's usual places)",
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="let torchvision download the dataset (needs internet)",
    )
    p.add_argument(
        "--n",
        type=positive_int,
        default=None,
        help="use the first N test examples (default: all)",
    )


def model_source(args: argparse.Namespace) -> Any:
    """The :class:`evalkit.ModelSource` the model flags of ``args`` describe (flags a command
    lacks keep the defaults): one place where flags become loader options, for every
    command. ``--ckpt`` is the weights file only next to ``--model SPEC``."""
    from evalkit.evaluation.source import ModelSource

    spec = getattr(args, "model", None)
    return ModelSource(
        weights=args.ckpt if spec else None,
        arch=getattr(args, "arch", None),
        dataset=getattr(args, "dataset", None),
        normalize=getattr(args, "normalize", None),
        force_normalize=bool(getattr(args, "force_normalize", False)),
        output=getattr(args, "output", None) or "auto",
        defense=getattr(args, "defense", None),
        params=params(getattr(args, "param", None)) or None,
        model_dir=getattr(args, "model_dir", None),
        weights_set=getattr(args, "weights_set", None),
    )


def params(items: list[str] | None) -> dict[str, object]:
    """``--param KEY=VALUE`` strings -> dict (:func:`evalkit.utils.parse.parse_key_values`)."""
    return parse_key_values(items, "--param")
