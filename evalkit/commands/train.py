"""``evalkit train``: flags -> :func:`evalkit.training.api.train` (train with a defense SPEC and
write a self-describing checkpoint)."""

from __future__ import annotations

import argparse
from typing import Any

from evalkit.commands.common import add_device_seed, params
from evalkit.defenses.spec import OBJECTIVES, PLUGINS
from evalkit.errors import EvalkitError
from evalkit.models import ARCHS
from evalkit.training.api import train

EPILOG = """examples:
  evalkit train --dataset fashion-mnist-mini --arch smallcnn --defense at --epochs 2 --out runs/at
  evalkit train --dataset cifar10 --download --arch resnet18 --defense trades+cas --epochs 100 --out runs/tc
  evalkit train ... --resume            # continue an interrupted run from its last epoch
  torchrun --nproc_per_node 2 -m evalkit train ...   # DistributedDataParallel
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a classifier with a defense SPEC",
        description="Train with a defense SPEC = [objective][+plugin...]; objectives: "
        f"{', '.join(OBJECTIVES)}; plugins: {', '.join(PLUGINS)} (e.g. at, trades+cas, at+he, at+rcm).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--dataset",
        default="fashion-mnist-mini",
        help="dataset name (default: the bundled fashion-mnist-mini)",
    )
    p.add_argument(
        "--arch", default="smallcnn", help=f"architecture: {', '.join(ARCHS)} (default: smallcnn)"
    )
    p.add_argument("--defense", default="standard", help="defense SPEC (default: standard)")
    p.add_argument(
        "--epochs", type=int, default=10, metavar="N", help="training epochs (default: 10)"
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="output directory for checkpoint.pt and history.csv (required)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/checkpoint.pt at its last finished epoch",
    )
    p.add_argument(
        "--init",
        default=None,
        metavar="CKPT",
        help="warm start from CKPT's weights (same arch and defense), e.g. a naturally "
        "trained CIFS model before AT+CIFS as in the CIFS paper (default: random init)",
    )
    p.add_argument(
        "--init-min-val-acc",
        type=float,
        default=None,
        metavar="ACC",
        help="refuse an --init whose last validation clean accuracy is below ACC or whose "
        "training health failed (default: no gate)",
    )
    opt = p.add_argument_group("optimisation")
    opt.add_argument(
        "--batch-size", type=int, default=128, help="examples per SGD step (default: 128)"
    )
    opt.add_argument(
        "--lr", type=float, default=0.1, help="initial SGD learning rate (default: 0.1)"
    )
    opt.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default: 0.9)")
    opt.add_argument(
        "--weight-decay", type=float, default=5e-4, help="SGD weight decay (default: 5e-4)"
    )
    opt.add_argument(
        "--schedule",
        default="multistep",
        choices=["multistep", "cosine", "constant"],
        help="learning-rate schedule: multistep (x gamma at --milestones), cosine or constant "
        "(default: multistep)",
    )
    opt.add_argument(
        "--milestones",
        default=None,
        help="epochs where the lr drops x gamma, e.g. 75,90 (default: 50%%,75%%)",
    )
    opt.add_argument(
        "--gamma",
        type=float,
        default=0.1,
        help="multistep factor applied to the lr at each milestone (default: 0.1)",
    )
    adv = p.add_argument_group("training attack")
    adv.add_argument("--eps", default="8/255", help="Linf budget (default 8/255)")
    adv.add_argument(
        "--attack-steps", type=int, default=10, help="PGD steps while training (default: 10)"
    )
    adv.add_argument("--attack-step-size", default=None, help="default eps/4 (2/255 at 8/255)")
    adv.add_argument(
        "--attack-bn",
        default="eval",
        choices=["eval", "train"],
        help="BN mode while crafting (eval: TRADES/MART/CAS practice; train: Madry) "
        "(default: eval)",
    )
    adv.add_argument("--beta", type=float, default=None, help="TRADES/MART weight (default 6 / 5)")
    adv.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="defense parameter, e.g. cas_beta=2, he_s=15, he_m=0.2, rcm_upsample=2 "
        "(repeatable; default: each defense's own, see README)",
    )
    mdl = p.add_argument_group("model and data")
    mdl.add_argument(
        "--strides",
        default=None,
        help="stage strides, e.g. 1122 for resnet18 (RCM) (default: the architecture's)",
    )
    mdl.add_argument(
        "--upsample",
        type=int,
        default=None,
        help="in-model input upsampling factor (RCM) (default: none)",
    )
    mdl.add_argument(
        "--pool", default=None, choices=["avg", "max"], help="final pooling (default avg)"
    )
    mdl.add_argument(
        "--width",
        type=int,
        default=None,
        help="base width (default: the architecture's; smallcnn 16, resnet18 64)",
    )
    mdl.add_argument(
        "--no-normalize", action="store_true", help="feed raw [0,1] pixels (no dataset mean/std)"
    )
    mdl.add_argument(
        "--augment",
        default=None,
        choices=["on", "off"],
        help="crop+flip (default: dataset convention)",
    )
    mdl.add_argument(
        "--n-train",
        type=int,
        default=None,
        help="use only the first N training examples (default: all)",
    )
    mdl.add_argument(
        "--val-size", type=int, default=500, help="held-out validation examples (default 500)"
    )
    mdl.add_argument(
        "--data-root",
        default=None,
        help="folder holding the dataset files (default: the dataset's usual places)",
    )
    mdl.add_argument("--download", action="store_true", help="let torchvision download the dataset")
    run = p.add_argument_group("run")
    add_device_seed(run)
    run.add_argument(
        "--amp",
        default="none",
        choices=["none", "bf16"],
        help="bf16 autocast on GPU (default: none)",
    )
    run.add_argument(
        "--channels-last", action="store_true", help="channels-last memory format (GPU speed)"
    )
    run.add_argument(
        "--no-progress", "--quiet", dest="quiet", action="store_true", help="no progress output"
    )


def _milestones(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(m) for m in text.split(",") if m.strip()]
    except ValueError:
        raise EvalkitError(
            f"--milestones {text!r} must be comma-separated epochs, e.g. 75,90"
        ) from None


def train_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`evalkit.training.api.train` that the flags say."""
    if args.epochs < 1:
        raise EvalkitError("--epochs must be at least 1")
    return dict(
        dataset=args.dataset,
        arch=args.arch,
        defense=args.defense,
        epochs=args.epochs,
        out=args.out,
        seed=args.seed,
        resume=args.resume,
        batch_size=args.batch_size,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        milestones=_milestones(args.milestones),
        gamma=args.gamma,
        eps=args.eps,  # parsed once, by train() (evalkit.utils.parse.parse_eps)
        attack_steps=args.attack_steps,
        attack_step_size=args.attack_step_size or None,
        attack_bn=args.attack_bn,
        beta=args.beta,
        params=params(args.param),
        augment=None if args.augment is None else args.augment == "on",
        normalize=not args.no_normalize,
        strides=args.strides,
        upsample=args.upsample,
        pool=args.pool,
        width=args.width,
        n_train=args.n_train,
        val_size=args.val_size,
        device=args.device,
        amp=args.amp,
        channels_last=args.channels_last,
        data_root=args.data_root,
        download=args.download,
        init=args.init,
        init_min_val_acc=args.init_min_val_acc,
        progress=not args.quiet,
    )


def run(args: argparse.Namespace) -> int:
    path = train(**train_kwargs(args))
    if not args.quiet:
        print(f"checkpoint: {path}")
    return 0


def interrupted_hint(args: argparse.Namespace, argv: list[str]) -> str | None:
    """Where the last finished epoch is and the exact command that continues from it."""
    import shlex
    from pathlib import Path

    ckpt = Path(args.out) / "checkpoint.pt"
    if not ckpt.exists():
        return f"no epoch finished yet, so {args.out} holds nothing to resume"
    again = shlex.join(["evalkit", *[a for a in argv if a != "--resume"], "--resume"])
    return f"the last finished epoch is saved in {ckpt}; continue with: {again}"
