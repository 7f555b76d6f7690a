"""``evalkit attack``: evaluate a checkpoint under an attack protocol and write a run directory.

A thin layer over :func:`evalkit.evaluation.evaluate`; every flag maps to one
:class:`~evalkit.evaluation.EvalConfig` field.
"""

from __future__ import annotations

import argparse
import datetime as _dt
from pathlib import Path

from evalkit.commands.common import add_data_options, add_device_seed, add_model_options

DESCRIPTION = """\
Evaluate a checkpoint's robustness. The default protocol (DESIGN.md section 6) runs FGSM,
PGD-20 (step eps/4, random start), CW-inf (PGD-30 on the per-example CW margin) and AutoAttack
standard, in that order. Each example counts as robust only if every attack fails on it; with
compaction (default) each attack only receives the points still robust, so the per-attack
numbers are the cumulative waterfall and the last equals the worst case.

Adaptive attacks are added from the checkpoint's defense: the joint loss with auxiliary heads
(CAS/CIFS), EOT-20 and AutoAttack 'rand' for randomised models (declared, or detected when two
forward passes differ), and DLR-loss PGD for bounded logits (HE).

The run directory holds config.json, summary.json, examples.parquet and per-batch records;
--resume continues a killed run. Launch with `torchrun --nproc_per_node K -m evalkit attack ...`
to shard the examples over K processes (gloo on CPU, NCCL on GPU).

presets: default, fast (demo: FGSM, PGD-10, CW-inf-10, AutoAttack APGD-CE+APGD-DLR 20 iters),
pgd, paper-cas, paper-cifs, paper-he, paper-sap, paper-rcm (see `evalkit info --presets`).
"""

EPILOG = """\
examples:
  evalkit attack --ckpt runs/at/checkpoint.pt
  evalkit attack --ckpt runs/at/checkpoint.pt --preset fast --n 500 --out runs/at-eval
  evalkit attack --ckpt model_test.pt --arch resnet18 --dataset cifar10 --data x.npz --attacks fgsm,pgd
  evalkit attack --ckpt runs/at/checkpoint.pt --defense sap --attacks pgd,autoattack
  torchrun --nproc_per_node 2 -m evalkit attack --ckpt runs/at/checkpoint.pt --n-examples 1000 --out runs/eval
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "attack",
        help="evaluate a checkpoint under attacks (FGSM, PGD, CW, AutoAttack, ...)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(p)
    add_data_options(p)
    p.add_argument(
        "--n-examples",
        dest="n",
        type=int,
        default=None,
        metavar="N",
        help="same as --n; use this spelling under torchrun, whose own parser "
        "rejects --n as an ambiguous abbreviation",
    )
    g = p.add_argument_group("protocol")
    g.add_argument(
        "--preset",
        default="default",
        help="named protocol: default, fast, pgd, paper-cas, paper-cifs, paper-he, "
        "paper-sap, paper-rcm (default: default)",
    )
    g.add_argument(
        "--attacks",
        default=None,
        metavar="LIST",
        help="comma list replacing the preset's attacks: fgsm, pgd, cw, autoattack, "
        "square, cw_l2, aa_plus, aa_rand, foolbox:AttackName",
    )
    g.add_argument(
        "--eps",
        default=None,
        metavar="LIST",
        help="budgets in pixel units, e.g. 8/255 or 8/255,4/255 (default: the preset's)",
    )
    g.add_argument(
        "--norm",
        default=None,
        choices=("linf", "l2"),
        help="threat model (default: the preset's, linf)",
    )
    g.add_argument(
        "--loss",
        default=None,
        choices=("ce", "cw", "dlr"),
        help="loss of the PGD/FGSM attacks (default: the preset's; CW keeps its margin)",
    )
    g.add_argument(
        "--eot",
        type=int,
        default=None,
        metavar="N",
        help="EOT samples per gradient (default: 20 for randomised models, else 1; "
        "1 turns EOT off)",
    )
    g.add_argument(
        "--no-compaction",
        action="store_true",
        help="run every attack on every clean-correct point (independent per-attack "
        "numbers; slower)",
    )
    g.add_argument(
        "--no-sanity",
        action="store_true",
        help="skip the sanity checks (eps monotonicity, huge-eps PGD, gradients, Square)",
    )
    r = p.add_argument_group("run")
    r.add_argument("--batch-size", type=int, default=128, help="examples per batch (default: 128)")
    r.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="run directory (default: runs/attack-<ckpt>-<time>)",
    )
    r.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out, skipping the batches already recorded",
    )
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_device_seed(p)
    return p


def _default_out(ckpt: str) -> Path:
    stem = Path(ckpt).parent.name if Path(ckpt).name == "checkpoint.pt" else Path(ckpt).stem
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"attack-{stem}-{stamp}"


def run(args: argparse.Namespace) -> int:
    import os

    from evalkit.errors import EvalkitError
    from evalkit.evaluation import EvalConfig, evaluate

    if args.resume and not args.out:
        raise EvalkitError("--resume needs --out DIR (the run directory to continue)")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not args.out:
        raise EvalkitError("with torchrun, pass --out DIR so every rank writes to the same run")
    out = Path(args.out) if args.out else _default_out(args.ckpt)
    cfg = EvalConfig(
        ckpt=args.ckpt,
        attacks=args.attacks,
        eps=args.eps,
        norm=args.norm,
        n=args.n,
        batch_size=args.batch_size,
        data=args.data,
        dataset=args.dataset,
        data_root=args.data_root,
        download=args.download,
        arch=args.arch,
        normalize=args.normalize,
        defense=args.defense,
        out=out,
        resume=args.resume,
        seed=args.seed,
        device=args.device,
        preset=args.preset,
        eot=args.eot,
        loss=args.loss,
        compaction=not args.no_compaction,
        sanity=not args.no_sanity,
        progress=not args.no_progress,
    )
    evaluate(cfg)
    return 0
