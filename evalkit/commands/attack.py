"""``evalkit attack``: flags -> :func:`evalkit.evaluate` (the robustness protocol on a model).

Every flag maps to one keyword of :func:`evalkit.evaluation.api.evaluate`; numbers are checked
there (one-line errors, exit 2). The protocol is described in docs/protocol.md, the defenses'
adaptive attacks in docs/defenses.md, the run directory in docs/run-directory.md.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from evalkit.commands.common import (
    add_data_options,
    add_device_seed,
    add_model_options,
    model_source,
    positive_int,
)

DESCRIPTION = """\
Evaluate a model's robustness. The default protocol runs FGSM, PGD-20 (step eps/4, random
start), CW-inf (PGD-30 on the per-example CW margin) and AutoAttack standard, in that order.
A point counts as robust only if no attack that ran (at any iterate, sanity probes included)
found an adversarial example for it; randomized models are scored over --mc-draws forward
passes per candidate (Monte Carlo). With compaction (default) each attack only receives the
points still robust, so per-attack numbers are the cumulative waterfall.

Adaptive attacks come from the model's traits: the joint loss with auxiliary heads (CAS/CIFS),
gradients through the CIFS mask, EOT for randomized models (AutoAttack too), a DLR-loss PGD for
bounded logits (HE), BPDA versions of every gradient attack for declared non-differentiable
steps (--defense bitdepth|jpeg|median, or bpda with --param bpda_modules=NAME). An explicit
--attacks list runs those attacks (made adaptive) and names the adaptive additions it left
out. A model whose input gradient is missing, zero or NaN (shattered) is refused with the fix.
--curve adds the minimum-norm attack FMN: robust accuracy at every eps from one run. The planned attacks and an estimated cost are printed first.

The run directory (config.json, summary.json, examples.parquet, records/) is bound to sha256
hashes of the model and data; --resume refuses a run whose inputs changed.
Docs: docs/protocol.md, docs/defenses.md, docs/run-directory.md in the evalkit repository.
"""

EPILOG = """\
examples:
  evalkit attack --ckpt runs/at/checkpoint.pt
  evalkit attack --ckpt runs/at/checkpoint.pt --preset fast --n 500 --out runs/at-eval
  evalkit attack --model mypkg.nets:build --ckpt weights.pt --dataset cifar10 --eps 8/255
  evalkit attack --model ./net.py:Net --data x.npz --attacks pgd,autoattack
  evalkit attack --ckpt runs/cifs/checkpoint.pt --param cifs_adaptive=true
  evalkit attack --ckpt runs/at/checkpoint.pt --defense sap --attacks pgd
  evalkit attack --ckpt runs/std/checkpoint.pt --defense jpeg --param jpeg_quality=75
  evalkit attack --model ./nets.py:build --defense bpda --param bpda_modules=quant
  evalkit attack --ckpt runs/at/checkpoint.pt --preset fast --curve
  evalkit attack --ckpt runs/at/checkpoint.pt --norm l2 --eps 0.5,1.0
  torchrun --nproc_per_node 2 -m evalkit attack --ckpt runs/at/checkpoint.pt --n-examples 1000 --out runs/eval
presets: default, fast, aa-fast, pgd, study-cpu, paper-cas, paper-cifs, paper-he, paper-sap,
paper-rcm (evalkit info --presets)
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "attack",
        help="evaluate a model under attacks (FGSM, PGD, CW, AutoAttack, ...)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(p, model_spec=True)
    add_data_options(p)
    p.add_argument(
        "--n-examples",
        dest="n",
        type=positive_int,
        default=None,
        metavar="N",
        help="same as --n; use this spelling under torchrun, whose own parser "
        "rejects --n as an ambiguous abbreviation (default: all)",
    )
    g = p.add_argument_group("protocol")
    g.add_argument("--preset", default="default", help="named protocol (default: default)")
    g.add_argument(
        "--attacks",
        default=None,
        metavar="LIST",
        help="comma list replacing the preset's attacks: fgsm, pgd, cw, autoattack, apgd, "
        "apgd-t, square, cw_l2, aa_plus, aa_rand, foolbox:AttackName (default: the preset's)",
    )
    g.add_argument(
        "--eps",
        default=None,
        metavar="LIST",
        help="budgets in pixel units, e.g. 8/255 or 8/255,4/255 (default: the preset's for "
        "linf, 0.5 for l2; linf in (0,1], l2 up to the image diameter sqrt(C*H*W))",
    )
    g.add_argument("--norm", default=None, help="threat model: linf or l2 (default: linf)")
    g.add_argument(
        "--loss",
        default=None,
        help="loss of the PGD/FGSM attacks: ce, cw or dlr; CW keeps its own (default: each "
        "attack's, ce for PGD/FGSM)",
    )
    g.add_argument(
        "--eot",
        type=positive_int,
        default=None,
        metavar="N",
        help="EOT samples per gradient (default: 20 for randomized models, else 1)",
    )
    g.add_argument(
        "--mc-draws",
        type=positive_int,
        default=20,
        metavar="K",
        help="forward passes per candidate when the model is randomized (default: 20)",
    )
    g.add_argument(
        "--adapt-for",
        default=None,
        metavar="TRAITS",
        help="also adapt to these traits (comma list of aux_heads, stochastic, bounded_logits, "
        "mask_gradients, non_differentiable): compared models then face the same adaptive attacks (default: the "
        "model's own traits only)",
    )
    g.add_argument(
        "--curve",
        action="store_true",
        help="also run the minimum-norm attack FMN once on every point: robust accuracy at "
        "every eps up to the largest budget (summary.json 'curve', drawn in the report)",
    )
    g.add_argument(
        "--curve-steps",
        type=positive_int,
        default=100,
        metavar="N",
        help="iterations of the curve's FMN attack (default: 100)",
    )
    g.add_argument(
        "--shattered",
        choices=("error", "run"),
        default="error",
        help="a model whose input gradient is zero or NaN (e.g. a rounding step): error (default, "
        "names the fix: declare the step for BPDA) or run the blind attacks anyway",
    )
    g.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        default="fp32",
        help="autocast the model's layers (inputs, perturbations and logits stay fp32); the "
        "gradient check refuses a precision that underflows it (default: fp32)",
    )
    g.add_argument(
        "--channels-last", action="store_true", help="channels-last memory format (GPU speed)"
    )
    g.add_argument(
        "--compile",
        nargs="?",
        const=True,
        default=False,
        metavar="BACKEND",
        help="torch.compile the model (default backend inductor, or name one, e.g. eager)",
    )
    g.add_argument(
        "--no-compaction",
        action="store_true",
        help="run every attack on every clean-correct point (independent per-attack numbers)",
    )
    g.add_argument(
        "--no-sanity",
        action="store_true",
        help="skip the checks (eps monotonicity, gradients, huge-eps PGD, Square probe)",
    )
    r = p.add_argument_group("run")
    r.add_argument(
        "--batch-size", type=positive_int, default=128, help="examples per batch (default: 128)"
    )
    r.add_argument(
        "--out", default=None, metavar="DIR", help="run directory (default: runs/attack-<time>)"
    )
    r.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out; without --out, the latest auto-named run of the same "
        "model and data in runs/ (refused if the model, data or protocol changed)",
    )
    r.add_argument(
        "--save-adversarial",
        action="store_true",
        help="also write the worst-case adversarial images, with the attack that made each, "
        "to OUT/adversarial/EPS.npz (x, y, index, attack, eps; loads back with --data)",
    )
    r.add_argument("--no-progress", "--quiet", action="store_true", help="no progress bars")
    add_device_seed(p)
    return p


def _default_out(spec: str) -> Path:
    from evalkit.evaluation.autoname import auto_run_dir

    return auto_run_dir(spec)


def _resume_dir(args: argparse.Namespace, model: str) -> Path:
    """The run to continue for ``--resume`` without ``--out``: the latest auto-named run of
    the same model and data (:func:`evalkit.evaluation.autoname.latest_auto_run`)."""
    from evalkit.errors import EvalkitError
    from evalkit.evaluation.autoname import ROOT, latest_auto_run

    found = latest_auto_run(
        model, checkpoint=_weights_file(args), data=args.data, dataset=args.dataset
    )
    if found is None:
        raise EvalkitError(
            f"--resume: no earlier auto-named run of {model} on this data in {ROOT}/ "
            "(pass --out DIR, the run directory to continue)"
        )
    found = found.absolute()
    print(f"evalkit attack: resuming {found} (the latest auto-named run of this model and data)")
    return found


def _weights_file(args: argparse.Namespace) -> str | None:
    """The file holding the weights: --ckpt (a checkpoint, or the weights of a --model)."""
    if not args.ckpt:
        return None
    from evalkit.checkpoint_files import resolve_checkpoint_path

    path = Path(args.ckpt)
    if path.is_dir():
        return str(resolve_checkpoint_path(path, quiet=True))
    return str(path)


def resume_command(argv: list[str], out: Path) -> str:
    """The exact command that continues an interrupted ``evalkit attack`` run in ``out``:
    the same arguments with ``--out OUT --resume`` (any earlier ``--out``/``--resume`` replaced)."""
    import shlex

    keep: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--out",):
            skip = True
            continue
        if arg.startswith("--out=") or arg == "--resume":
            continue
        keep.append(arg)
    return shlex.join(["evalkit", *keep, "--out", str(out), "--resume"])


def interrupted_hint(args: argparse.Namespace, argv: list[str]) -> str | None:
    """What the interrupt message says: where the finished units are and how to continue."""
    out = getattr(args, "run_dir", None)
    if out is None:
        return None
    out = Path(out).absolute()
    if not (Path(out) / "config.json").exists():
        return f"nothing was saved yet (the run directory {out} was not started)"
    return f"completed units are saved in {out}; continue with: {resume_command(argv, Path(out))}"


def run(args: argparse.Namespace) -> int:
    from evalkit.errors import EvalkitError
    from evalkit.evaluation.api import evaluate

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not args.out:
        raise EvalkitError("with torchrun, pass --out DIR so every rank writes to the same run")
    model = args.model or args.ckpt
    if not model:
        raise EvalkitError("give --ckpt FILE or --model SPEC (e.g. mypkg.nets:build)")
    if args.out:
        out = Path(args.out)
    elif args.resume:
        out = _resume_dir(args, str(model))
    else:
        out = _default_out(str(model))
    args.run_dir = out
    evaluate(
        model,
        args.data,
        eps=args.eps,
        norm=args.norm,
        preset=args.preset,
        attacks=args.attacks,
        n=args.n,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        mc_draws=args.mc_draws,
        eot=args.eot,
        loss=args.loss,
        compaction=not args.no_compaction,
        sanity=not args.no_sanity,
        out=out,
        resume=args.resume,
        progress=not args.no_progress,
        source=model_source(args),
        data_root=args.data_root,
        download=args.download,
        adapt_for={t.strip(): True for t in (args.adapt_for or "").split(",") if t.strip()},
        save_adversarial=args.save_adversarial,
        curve=args.curve,
        curve_steps=args.curve_steps,
        shattered=args.shattered,
        precision=args.precision,
        channels_last=args.channels_last,
        compile=args.compile,
    )
    return 0
