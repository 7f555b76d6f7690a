"""``evalkit study``: flags -> :func:`evalkit.pipelines.studies.run_study` (run a named
reproduction study of the seed papers and judge its claims)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys

EPILOG = """studies: channels, cas-cifs, he, sap-eot, pooling, bpda (or all)
examples:
  evalkit study channels --scale cpu --out runs/studies
  evalkit study all --scale cpu --fresh --out runs/studies --publish docs/studies
  evalkit study cas-cifs --scale medium --data-root DIR_WITH_FASHION_MNIST
  evalkit study cas-cifs --scale gpu --device cuda --out runs/studies-gpu

A step (training, evaluation, analysis) is reused only when its arguments, the bytes of its
inputs (checkpoints, data) and evalkit's code are unchanged; --fresh recomputes everything. Scales and steps:
docs/studies/README.md.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study",
        help="run a named reproduction study of the seed papers",
        description="Train (every model with each seed), attack and analyse as a seed paper "
        "did, then judge each of its claims as reproduced / partly / not reproduced / "
        "inconclusive from the measured numbers and their intervals.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", nargs="?", help="study name, or all")
    p.add_argument("--list", action="store_true", help="list the studies")
    p.add_argument(
        "--scale",
        default="cpu",
        choices=["cpu", "medium", "gpu"],
        help="cpu (small CNN, bundled subset), medium (ResNet-18 width 16, full Fashion-MNIST, "
        "hours on CPU) or gpu (ResNet-18, full Fashion-MNIST) (default: cpu)",
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
        help="copy report.html, FINDINGS.md and findings.json to DIR/NAME/SCALE (default: no copy)",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="recompute every step even when its inputs are unchanged (for publication)",
    )
    p.add_argument(
        "--dataset",
        default=None,
        help="override the scale's dataset, e.g. cifar10 (default: the scale's)",
    )
    p.add_argument(
        "--data-root",
        default=None,
        help="folder holding the dataset files (default: the dataset's usual places)",
    )
    p.add_argument(
        "--eps",
        default=None,
        help="override the scale's eps, e.g. 8/255 for CIFAR (default: the scale's)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="override the scale's epochs (default: the scale's)",
    )
    p.add_argument("--seeds", default=None, help="training seeds, comma-separated (default 0,1,2)")
    p.add_argument(
        "--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N] (default: auto)"
    )
    p.add_argument("--progress", action="store_true", help="show progress bars of each step")


def _seeds(text: str | None) -> list[int] | None:
    from evalkit.errors import EvalkitError

    if text is None:
        return None
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise EvalkitError(
            f"--seeds {text!r} must be comma-separated integers, e.g. 0,1,2"
        ) from None


def run(args: argparse.Namespace) -> int:
    from evalkit.errors import EvalkitError
    from evalkit.pipelines.studies import STUDIES, StepRunner, list_studies, run_study, scale_for
    from evalkit.pipelines.studies.runner import end_session, fresh_session

    if args.list or not args.name:
        print(list_studies())
        return 0
    names = list(STUDIES) if args.name == "all" else [args.name]
    if args.name != "all" and args.name not in STUDIES:
        raise EvalkitError(f"unknown study {args.name!r} (known: {', '.join(STUDIES)}, or all)")
    scale = scale_for(
        args.scale,
        dataset=args.dataset,
        eps=args.eps,
        epochs=args.epochs,
        seeds=_seeds(args.seeds),
        data_root=args.data_root,
    )
    # an interrupted `--fresh` run of the same study and scale continues where it stopped
    what = {k: getattr(args, k) for k in ("name", "scale", "seeds", "epochs", "dataset", "eps")}
    session = fresh_session(args.out, json.dumps(what, sort_keys=True)) if args.fresh else None
    runner = StepRunner(fresh=args.fresh, progress=args.progress, session=session)
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
                *(["--seeds", args.seeds] if args.seeds else []),
                "--fresh",
                *(["--publish", args.publish] if args.publish else []),
            ]
        )
        run_study(
            name,
            scale,
            args.out,
            device=args.device,
            models_dir=args.models_dir,
            publish=args.publish,
            command=cmd,
            runner=runner,
        )
    end_session(args.out)
    print(f"study results under {args.out}", file=sys.stderr)
    return 0
