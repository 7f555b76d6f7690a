"""``evalkit analyze``: the studies of the seed papers on one or more checkpoints.

* ``channels``: per-channel activation magnitude and frequency, natural vs PGD (CAS Fig. 1-2);
* ``importance``: CIFS channel-importance masks, natural vs PGD;
* ``pooling``: robust accuracy and pooled-feature change vs feature-map size, avg vs max pool
  (RCM), on checkpoints trained with different ``--strides/--upsample/--pool``;
* ``sap-eot``: robust accuracy of a checkpoint with and without SAP vs EOT samples and eps.

Every study writes tables (CSV + parquet), figures (PNG + SVG) and ``analysis.json`` to --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from evalkit.commands.common import (
    add_data_options,
    add_device_seed,
    add_model_options,
    load_eval_data,
    load_model_from_args,
    parse_normalize,
)
from evalkit.errors import EvalkitError
from evalkit.utils.device import resolve_device
from evalkit.utils.parse import parse_eps, parse_eps_list
from evalkit.utils.seeding import seed_everything

PAPER_STEP_SIZE = 0.003  # the CAS activation-analysis PGD step (seeds.md 1c)
STUDIES = ("channels", "importance", "pooling", "sap-eot")

DESCRIPTION = """\
Reproduce the analyses behind the seed papers on your checkpoints.

studies:
  channels    spatial-mean activation per channel at --layer (default: the penultimate block,
              before any CAS/CIFS mask) for natural and PGD-20 (step 0.003) images; a channel is
              'activated' when above --threshold x that image's largest channel. Plots magnitude
              and activation frequency; analysis.json holds mean magnitudes and the entropy/Gini
              of the frequency distribution (uniformity). Pass several --ckpt to compare
              (e.g. standard, at, at+cas, at+cifs).
  importance  CIFS channel-importance masks on natural vs adversarial inputs (CIFS checkpoints).
  pooling     robust accuracy and ||pool(f(x'))-pool(f(x))|| vs feature-map size, avg vs max
              pooling, over checkpoints that differ in --strides/--upsample/--pool. To train the
              grid first: python -m analysis.pooling --help
  sap-eot     accuracy of each checkpoint dense and with SAP under PGD with 1,2,5,10,20 EOT
              samples per gradient, at each --eps.

examples:
  evalkit analyze --ckpt runs/std/checkpoint.pt --ckpt runs/at/checkpoint.pt --study channels \\
      --class 0 --out out/channels
  evalkit analyze --ckpt runs/at/checkpoint.pt --study sap-eot --eps 2/255,4/255,8/255 --n 200 --out an/sap
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "analyze",
        help="channel activation, importance, pooling and SAP-EOT studies",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(p, multiple=True)
    add_data_options(p)
    add_device_seed(p)
    p.add_argument("--study", required=True, choices=STUDIES, help="which study to run")
    p.add_argument("--out", required=True, help="output folder (plots, tables, analysis.json)")
    p.add_argument(
        "--layer",
        default=None,
        help="dotted module name to read (default: model.penultimate, or the unmasked inner "
        "block of a CAS/CIFS wrapper, e.g. layer4.1.block)",
    )
    p.add_argument(
        "--class",
        dest="class_k",
        type=int,
        default=None,
        metavar="K",
        help="only test images of class K (the paper uses class 0); default: all classes",
    )
    p.add_argument(
        "--eps",
        default=None,
        help="Linf budget (default 8/255; sap-eot takes a list, default 2/255,4/255,8/255)",
    )
    p.add_argument("--steps", type=int, default=20, help="PGD steps (default 20, the CAS recipe)")
    p.add_argument(
        "--step-size",
        default=None,
        help="PGD step size (default: 0.003 for channels/importance as in the CAS analysis, "
        "eps/4 for pooling and sap-eot)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=0.01,
        help="a channel is activated when above THRESHOLD x the image's max channel (default 0.01)",
    )
    p.add_argument(
        "--sort",
        choices=("natural", "independent"),
        default="independent",
        help="magnitude plot order: both curves in natural order, or each sorted on its own "
        "as in the CAS paper's Figure 1 (default)",
    )
    p.add_argument(
        "--magnitude",
        choices=("mean", "activated", "paper_running"),
        default="mean",
        help="plotted magnitude: true mean (default), sum/activated-count, or the paper "
        "code's running average (all three are in the table)",
    )
    p.add_argument(
        "--eot", default="1,2,5,10,20", help="sap-eot: EOT sample counts (default 1,2,5,10,20)"
    )
    p.add_argument(
        "--eval-samples",
        type=int,
        default=10,
        help="sap-eot: forward passes averaged (softmax) to score a stochastic model (default 10)",
    )
    p.add_argument(
        "--batch-size", type=int, default=128, help="batch size for attacks and forwards"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _int_list(text: str, name: str) -> list[int]:
    try:
        vals = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise EvalkitError(
            f"cannot read {name} {text!r} (comma-separated integers, e.g. 1,2,5)"
        ) from None
    if not vals or min(vals) < 1:
        raise EvalkitError(f"{name} needs positive integers, e.g. 1,2,5,10,20")
    return vals


def _load_entries(args: argparse.Namespace) -> tuple[list, object]:
    from analysis.common import ModelEntry, model_label, unique_labels

    loaded = [load_model_from_args(args, ckpt) for ckpt in args.ckpt]
    labels = unique_labels([model_label(c, m) for c, (_, m) in zip(args.ckpt, loaded)])
    entries = [ModelEntry(lab, model, meta) for lab, (model, meta) in zip(labels, loaded)]
    return entries, loaded[0][1]


def _data(args: argparse.Namespace, meta: object, entries: list) -> tuple:
    for e in entries[1:]:
        if (e.meta.in_channels, e.meta.input_size) != (meta.in_channels, meta.input_size):  # type: ignore[attr-defined]
            raise EvalkitError(
                f"checkpoints take different input shapes ({e.label}); compare models of one dataset"
            )
    if args.class_k is None:
        data = load_eval_data(args, meta)  # type: ignore[arg-type]
    else:
        if args.class_k < 0 or args.class_k >= meta.num_classes:  # type: ignore[attr-defined]
            raise EvalkitError(f"--class {args.class_k} is outside 0..{meta.num_classes - 1}")  # type: ignore[attr-defined]
        full = load_eval_data(argparse.Namespace(**{**vars(args), "n": None}), meta)  # type: ignore[arg-type]
        data = full.of_class(args.class_k).first(args.n)
        if len(data) == 0:
            raise EvalkitError(f"no test images of class {args.class_k} in the evaluation data")
    return data.float_batch(slice(None)), data.y


def run(args: argparse.Namespace) -> int:
    if args.threshold < 0 or args.threshold >= 1:
        raise EvalkitError("--threshold must be in [0, 1) (the paper uses 0.01)")
    if args.steps < 1 or args.batch_size < 1:
        raise EvalkitError("--steps and --batch-size must be positive")
    seed_everything(args.seed)
    device = resolve_device(args.device)
    step_size = parse_eps(args.step_size) if args.step_size else None
    paper_step = step_size if step_size is not None else PAPER_STEP_SIZE
    show = not args.quiet
    out = Path(args.out)
    common = dict(batch_size=args.batch_size, seed=args.seed, device=device, show_progress=show)

    if args.study == "sap-eot":
        from analysis.sap_eot import run_sap_eot_study
        from evalkit.checkpoint import load_model

        eps_list = parse_eps_list(args.eps or "2/255,4/255,8/255")
        eots = _int_list(args.eot, "--eot")
        if args.defense:
            raise EvalkitError(
                "sap-eot loads each checkpoint dense and with SAP itself; drop --defense"
            )
        pairs = []
        for ckpt in args.ckpt:
            kw = dict(
                arch=args.arch,
                dataset=args.dataset,
                normalize=parse_normalize(args.normalize),
                device=device,
            )
            dense, meta = load_model(ckpt, **kw)
            sap, _ = load_model(ckpt, defense="sap", **kw)
            pairs.append((ckpt, dense, sap, meta))
        x, y = _data(args, pairs[0][3], [])
        path = run_sap_eot_study(
            pairs,
            x,
            y,
            out,
            eps_list=eps_list,
            eot=eots,
            steps=args.steps,
            step_size=step_size,
            eval_samples=args.eval_samples,
            **common,
        )
        print(f"wrote {path}")
        return 0

    entries, meta = _load_entries(args)
    x, y = _data(args, meta, entries)
    eps = parse_eps(args.eps or "8/255")
    extra = {"data": args.data or args.dataset or getattr(meta, "dataset", None)}
    if args.study == "channels":
        from analysis.channels import run_channel_study

        scalars = run_channel_study(
            entries,
            x,
            y,
            out,
            eps=eps,
            layer=args.layer,
            class_k=args.class_k,
            threshold=args.threshold,
            sort=args.sort,
            magnitude=args.magnitude,
            steps=args.steps,
            step_size=paper_step,
            extra_params=extra,
            **common,
        )
        for label, s in scalars.items():
            print(
                f"{label}: mean magnitude natural {s['mean_magnitude_natural']:.4g}, adversarial "
                f"{s['mean_magnitude_adversarial']:.4g}; frequency entropy natural {s['entropy_natural']:.3f}, "
                f"adversarial {s['entropy_adversarial']:.3f}"
            )
    elif args.study == "importance":
        from analysis.importance import run_importance_study

        run_importance_study(
            entries,
            x,
            y,
            out,
            eps=eps,
            steps=args.steps,
            step_size=paper_step,
            extra_params=extra,
            **common,
        )
    elif args.study == "pooling":
        from analysis.pooling import run_pooling_eval

        run_pooling_eval(
            entries,
            x,
            y,
            out,
            eps=eps,
            steps=args.steps,
            step_size=step_size,
            extra_params=extra,
            **common,
        )
    print(f"wrote {out / 'analysis.json'}")
    return 0
