"""``evalkit analyze``: flags -> :func:`evalkit.analyses.analyze` on one or more checkpoints.

* ``channels``: per-channel activation magnitude and frequency, natural vs PGD (CAS Fig. 1-2);
* ``importance``: CIFS channel-importance masks, natural vs PGD;
* ``pooling``: robust accuracy and pooled-feature change vs feature-map size, avg vs max pool
  (RCM), on checkpoints trained with different ``--strides/--upsample/--pool``;
* ``sap-eot``: robust accuracy of a checkpoint with and without SAP vs EOT samples and eps;
* ``distributions``: activation values and per-channel means, natural vs adversarial, at two
  or more layers;
* and any other analysis registered with :func:`evalkit.analyses.register_analysis`.

Every analysis writes tables (CSV + parquet), figures (PNG + SVG) and ``analysis.json`` to --out.
``--study`` is the old name of ``--analysis`` (``evalkit study`` runs reproduction studies).
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from evalkit.commands.common import (
    add_data_options,
    add_device_seed,
    add_model_options,
    model_source,
)
from evalkit.errors import EvalkitError
from evalkit.evaluation.source import ModelSource
from evalkit.utils.parse import parse_key_values

BUILTIN = ("channels", "importance", "pooling", "sap-eot", "distributions")
LABELLED = re.compile(r"^[A-Za-z0-9_.-]+=(?!=)")  # --ckpt LABEL=PATH

DESCRIPTION = """Reproduce the analyses behind the seed papers on your checkpoints.

analyses:
  channels    spatial-mean activation per channel at --layer (default: the penultimate block,
              before any CAS/CIFS mask) for natural and PGD-20 (step 0.003) images; a channel is
              'activated' when above --threshold x that image's largest channel. Plots magnitude
              and activation frequency; analysis.json holds mean magnitudes and the entropy/Gini
              of the frequency distribution (uniformity). Pass several --ckpt to compare
              (e.g. standard, at, at+cas, at+cifs).
  importance  CIFS channel-importance masks on natural vs adversarial inputs (CIFS checkpoints).
  pooling     robust accuracy and ||pool(f(x'))-pool(f(x))|| vs feature-map size, avg vs max
              pooling, over checkpoints that differ in --strides/--upsample/--pool (the grid is
              trained by 'evalkit study pooling').
  sap-eot     accuracy of each checkpoint dense and with SAP under PGD with 1,2,5,10,20 EOT
              samples per gradient, at each --eps.
  distributions
              activation values and per-channel means, natural vs PGD, at two or more layers
              per model (--layer layer3,layer4): ECDFs, split violins, quantile table.
  (--analysis list prints every registered analysis, including added ones)

examples:
  evalkit analyze --ckpt runs/std/checkpoint.pt --ckpt runs/at/checkpoint.pt --analysis channels \\
      --class 0 --out out/channels
  evalkit analyze --ckpt runs/at/checkpoint.pt --analysis sap-eot --eps 2/255,4/255,8/255 --n 200 --out an/sap
  evalkit analyze --ckpt std=runs/a/checkpoint.pt --ckpt at=runs/b/checkpoint.pt --analysis channels --out x
      (LABEL=PATH names the models in tables and plots; default: the checkpoint's folder)
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "analyze",
        help="analyses: channels, importance, pooling, sap-eot, distributions",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(p, multiple=True)
    add_data_options(p)
    add_device_seed(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--analysis",
        metavar="NAME",
        help=f"which analysis to run ({', '.join(BUILTIN)}, or 'list'; required, no default)",
    )
    which.add_argument(
        "--study",
        metavar="NAME",
        help="deprecated name of --analysis (kept for old scripts; default: none)",
    )
    p.add_argument(
        "--out", required=True, help="output folder for plots, tables, analysis.json (required)"
    )
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
    p.add_argument("--steps", type=int, default=None, help="PGD steps (default 20, the CAS recipe)")
    p.add_argument(
        "--step-size",
        default=None,
        help="PGD step size (default: 0.003 for channels/importance as in the CAS analysis, "
        "eps/4 for pooling and sap-eot)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="a channel is activated when above THRESHOLD x the image's max channel (default 0.01)",
    )
    p.add_argument(
        "--sort",
        choices=("natural", "independent"),
        default=None,
        help="magnitude plot order: both curves in natural order, or each sorted on its own "
        "as in the CAS paper's Figure 1 (default)",
    )
    p.add_argument(
        "--magnitude",
        choices=("mean", "activated", "paper_running"),
        default=None,
        help="plotted magnitude: true mean (default), sum/activated-count, or the paper "
        "code's running average (all three are in the table)",
    )
    p.add_argument("--eot", default=None, help="sap-eot: EOT sample counts (default 1,2,5,10,20)")
    p.add_argument(
        "--eval-samples",
        type=int,
        default=None,
        help="sap-eot: forward passes averaged (softmax) to score a stochastic model (default 10)",
    )
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of an added analysis (repeatable; numbers are parsed; default: the "
        "analysis's own)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=128,
        help="batch size for attacks and forwards (default: 128)",
    )
    p.add_argument(
        "--no-progress", "--quiet", dest="quiet", action="store_true", help="no progress bars"
    )
    return p


# flags that are options of the analysis functions (default None = the analysis's own default)
OPTION_FLAGS = (
    "layer",
    "steps",
    "step_size",
    "threshold",
    "sort",
    "magnitude",
    "eot",
    "eval_samples",
)


def analysis_options(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """The analysis's own options: the option flags given, plus ``--option KEY=VALUE``; a flag
    the analysis does not take is refused with one line."""
    import inspect

    from evalkit.analyses import get_analysis

    params = inspect.signature(get_analysis(name).fn).parameters
    opts: dict[str, Any] = {}
    for key in OPTION_FLAGS:
        value = getattr(args, key)
        if value is None:
            continue
        if key not in params:
            flag = "--" + key.replace("_", "-")
            raise EvalkitError(f"{flag} does not apply to --analysis {name}")
        opts[key] = value
    # option names are Python identifiers: step-size and step_size are one key, so they are
    # made one before the parser's check for a key given twice
    items = [
        key.replace("-", "_") + sep + value
        for key, sep, value in (item.partition("=") for item in args.option)
    ]
    extra = parse_key_values(items, "--option")
    for key in extra:
        if key in opts:
            raise EvalkitError(f"--option {key} repeats --{key.replace('_', '-')}: give it once")
        if key in ModelSource.names():
            raise EvalkitError(
                f"--option {key} is a model-loading option: use --{key.replace('_', '-')}"
            )
    opts.update(extra)
    return opts


def _models(items: list[str]) -> list[str] | dict[str, str]:
    """``--ckpt PATH`` (labelled by its folder) or ``--ckpt LABEL=PATH`` (all or none)."""
    pairs = [item.split("=", 1) if LABELLED.match(item) else [None, item] for item in items]
    if all(label is None for label, _ in pairs):
        return [path for _, path in pairs]
    if any(label is None for label, _ in pairs):
        raise EvalkitError("label every --ckpt as LABEL=PATH, or none of them")
    labels = [label for label, _ in pairs]
    if len(set(labels)) != len(labels):
        raise EvalkitError(f"--ckpt labels must be distinct (got {', '.join(labels)})")
    return {label: path for label, path in pairs}


def run(args: argparse.Namespace) -> int:
    from evalkit.analyses import analyze, available_analyses

    name = args.analysis or args.study
    if args.study:
        print(
            "evalkit analyze: --study is deprecated, use --analysis (evalkit study runs "
            "reproduction studies)",
            file=sys.stderr,
        )
    if name == "list":
        for spec in available_analyses().values():
            print(f"{spec.name:<12} {spec.description}")
        return 0
    if (args.steps is not None and args.steps < 1) or args.batch_size < 1:
        raise EvalkitError("--steps and --batch-size must be positive")
    result = analyze(
        _models(args.ckpt),
        analysis=name,
        data=args.data or args.dataset,
        out=args.out,
        eps=args.eps,
        n=args.n,
        class_k=args.class_k,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        progress=not args.quiet,
        data_root=args.data_root,
        download=args.download,
        source=model_source(args),
        **analysis_options(args, name),
    )
    if name == "channels":
        for label, s in result.scalars.items():
            print(
                f"{label}: mean magnitude natural {s['mean_magnitude_natural']:.4g}, adversarial "
                f"{s['mean_magnitude_adversarial']:.4g}; frequency entropy natural "
                f"{s['entropy_natural']:.3f}, adversarial {s['entropy_adversarial']:.3f}"
            )
    print(f"wrote {result.out / 'analysis.json'}")
    return 0
