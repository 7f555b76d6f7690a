"""``evalkit study``: run a named reproduction study of the seed papers and judge its claims."""

from __future__ import annotations

import argparse
import shlex
import sys

EPILOG = """studies: channels, cas-cifs, he, sap-eot, pooling (or all)
examples:
  evalkit study channels --scale cpu --out runs/studies
  evalkit study all --scale cpu --out runs/studies --publish docs/studies
  evalkit study cas-cifs --scale gpu --device cuda --out runs/studies-gpu
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study",
        help="run a named reproduction study of the seed papers",
        description="Train, attack and analyse as a seed paper did, then judge each of its "
        "claims as reproduced / partly / not reproduced from the measured numbers.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", nargs="?", help="study name, or all")
    p.add_argument("--list", action="store_true", help="list the studies")
    p.add_argument(
        "--scale", default="cpu", choices=["cpu", "gpu"], help="cpu (minutes on 2 cores) or gpu"
    )
    p.add_argument("--out", default="runs/studies", help="output root (default runs/studies)")
    p.add_argument(
        "--models-dir",
        default=None,
        help="where checkpoints go, shared across studies (default OUT/models)",
    )
    p.add_argument(
        "--publish",
        default=None,
        metavar="DIR",
        help="copy report.html and FINDINGS.md to DIR/NAME/SCALE",
    )
    p.add_argument("--dataset", default=None, help="override the scale's dataset (e.g. cifar10)")
    p.add_argument("--eps", default=None, help="override the scale's eps (e.g. 8/255 for CIFAR)")
    p.add_argument("--epochs", type=int, default=None, help="override the scale's epochs")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from analysis.studies import STUDIES, list_studies, run_study, scale_for
    from evalkit.errors import EvalkitError

    if args.list or not args.name:
        print(list_studies())
        return 0
    names = list(STUDIES) if args.name == "all" else [args.name]
    if args.name != "all" and args.name not in STUDIES:
        raise EvalkitError(f"unknown study {args.name!r} (known: {', '.join(STUDIES)}, or all)")
    scale = scale_for(args.scale, dataset=args.dataset, eps=args.eps, epochs=args.epochs)
    for name in names:
        cmd = shlex.join(
            [
                "evalkit",
                "study",
                name,
                "--scale",
                args.scale,
                *(["--dataset", args.dataset] if args.dataset else []),
                *(["--eps", args.eps] if args.eps else []),
                *(["--epochs", str(args.epochs)] if args.epochs else []),
                *(["--publish", args.publish] if args.publish else []),
            ]
        )
        run_study(
            name,
            scale,
            args.out,
            device=args.device,
            seed=args.seed,
            models_dir=args.models_dir,
            publish=args.publish,
            command=cmd,
        )
    print(f"study results under {args.out}", file=sys.stderr)
    return 0
