"""Options shared by several subcommands (model/data/device), so they read the same everywhere."""

from __future__ import annotations

import argparse

import torch.nn as nn

from evalkit.checkpoint import CheckpointMeta, load_model
from evalkit.data import ArraySplit, load_array_file, load_split
from evalkit.errors import DataError
from evalkit.utils.device import resolve_device
from evalkit.utils.parse import parse_floats


def add_device_seed(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N] (default: auto)"
    )
    p.add_argument("--seed", type=int, default=0, help="global random seed (default: 0)")


def add_model_options(p: argparse.ArgumentParser, *, multiple: bool = False) -> None:
    """--ckpt plus what a foreign state_dict needs (--arch, --dataset, --normalize) and --defense."""
    if multiple:
        p.add_argument(
            "--ckpt",
            action="append",
            required=True,
            metavar="PATH",
            help="checkpoint (.pt); repeat to compare several",
        )
    else:
        p.add_argument("--ckpt", required=True, metavar="PATH", help="checkpoint (.pt) to load")
    p.add_argument(
        "--arch", default=None, help="architecture of a plain (foreign) state_dict, e.g. resnet18"
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
        "--defense",
        default=None,
        help="test-time defense added on load, e.g. sap (stochastic activation pruning)",
    )


def add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        default=None,
        metavar="FILE",
        help=".npz/.pt with x, y (uint8 or float; NCHW or NHWC)",
    )
    p.add_argument("--data-root", default=None, help="folder holding the dataset files")
    p.add_argument(
        "--download",
        action="store_true",
        help="let torchvision download the dataset (needs internet)",
    )
    p.add_argument(
        "--n", type=int, default=None, help="use the first N test examples (default: all)"
    )


def parse_normalize(text: str | None) -> tuple[list[float], list[float]] | None:
    if not text:
        return None
    if ";" not in text:
        mean_s, std_s = text.split(",", 1) if text.count(",") == 1 else (text, text)
        return [float(mean_s)], [float(std_s)]
    mean_s, std_s = text.split(";", 1)
    return list(parse_floats(mean_s, name="mean")), list(parse_floats(std_s, name="std"))


def load_model_from_args(
    args: argparse.Namespace, ckpt: str | None = None
) -> tuple[nn.Module, CheckpointMeta]:
    device = resolve_device(getattr(args, "device", "auto"))
    return load_model(
        ckpt or args.ckpt,
        arch=args.arch,
        dataset=args.dataset,
        normalize=parse_normalize(args.normalize),
        defense=args.defense,
        device=device,
    )


def load_eval_data(args: argparse.Namespace, meta: CheckpointMeta) -> ArraySplit:
    """The evaluation set: --data file, else --dataset / the checkpoint's dataset (test split)."""
    if args.data:
        data = load_array_file(args.data)
    else:
        name = args.dataset or meta.dataset
        if not name:
            raise DataError("no data: pass --data FILE.npz or --dataset NAME")
        data = load_split(name, "test", root=args.data_root, download=args.download)
    expected = (meta.in_channels, meta.input_size, meta.input_size)
    if data.shape != expected:
        raise DataError(
            f"data images are {data.shape} (C,H,W) but the model expects {expected} (pick matching --data/--dataset)"
        )
    if int(data.y.max()) >= meta.num_classes or int(data.y.min()) < 0:
        raise DataError(
            f"labels range {int(data.y.min())}..{int(data.y.max())} but the model has {meta.num_classes} classes"
        )
    return data.first(args.n)
