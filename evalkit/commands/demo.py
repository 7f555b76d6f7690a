"""``evalkit demo``: flags -> :func:`evalkit.pipelines.demo.run_demo` (the offline end-to-end job:
train three models, attack, analyse, report)."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Run the whole pipeline offline on the bundled Fashion-MNIST subset (fashion-mnist-mini):

  1. train three small CNNs: standard, PGD-AT, and PGD-AT + CAS (channel-wise activation
     suppressing, Bai et al. 2021);
  2. attack each with the harness's 'fast' preset (FGSM, PGD-10, CW-inf-10, AutoAttack
     APGD-CE + APGD-DLR; joint-loss variants for CAS) at eps 2/255, 4/255, 6/255 and 8/255 on
     300 test images, every accuracy with its 95% interval;
  3. run the channel-activation study on all three (natural vs adversarial, CAS Figures 1-2);
  4. write OUT/report.html and OUT/report.pdf (unless --no-pdf) and print where they are.

It takes about three and a half minutes on two CPU cores (one and a half before the eps sweep). The numbers come from tiny models trained for a
few epochs: they show the pipeline and the qualitative gap, not paper-grade robustness.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo",
        help="offline end-to-end run on the bundled Fashion-MNIST subset",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--out",
        default="evalkit-demo",
        metavar="DIR",
        help="output folder for models, run directories, analysis and the report "
        "(default: ./evalkit-demo; an earlier demo folder is overwritten)",
    )
    p.add_argument(
        "--fast",
        action="store_true",
        help="much smaller sizes (1 epoch on 600 images, 64 test images): a smoke test in well under a minute",
    )
    p.add_argument("--no-pdf", action="store_true", help="write only the HTML report")
    p.add_argument(
        "--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N] (default: auto)"
    )
    p.add_argument("--seed", type=int, default=0, help="global random seed (default: 0)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: 1 on machines with 2 or fewer cores, where "
        "two threads competing with any other load ran ~10x slower; else torch's default)",
    )
    return p


def _ci(ci: object) -> str:
    """`` [36.7, 48.1]`` for a recorded ``[low, high]`` pair, else empty."""
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci:
        return f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    return ""


def run(args: argparse.Namespace) -> int:
    import os

    import torch

    from evalkit.errors import EvalkitError
    from evalkit.pipelines.demo import run_demo

    threads = args.threads
    if threads is None and (os.cpu_count() or 1) <= 2:
        threads = 1
    if threads is not None and threads < 1:
        raise EvalkitError(f"--threads must be >= 1, got {threads}")
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        result = run_demo(
            args.out, fast=args.fast, device=args.device, seed=args.seed, pdf=not args.no_pdf
        )
    finally:
        torch.set_num_threads(before)
    print(f"demo finished in {result['wall_time_s']:.0f} s (95% intervals in brackets)")
    for name, m in result["models"].items():
        clean, worst = m["clean_accuracy"], m["worst_case_robust_accuracy"]
        sweep = ", ".join(
            f"{w['eps']} {100 * (w['robust_accuracy'] or 0):.1f}%{_ci(w['robust_accuracy_ci'])}"
            for w in m.get("sweep", [])
            if w["eps"] != m["eps"]
        )
        print(
            f"  {name:<9} clean {100 * (clean or 0):5.1f}%{_ci(m.get('clean_accuracy_ci'))}   "
            f"worst-case robust @ {m['eps']} {100 * (worst or 0):5.1f}%"
            f"{_ci(m.get('worst_case_robust_accuracy_ci'))}" + (f"   ({sweep})" if sweep else "")
        )
    print(f"report: {result['report'].resolve()}")
    if result["pdf"] is not None:
        print(f"PDF:    {result['pdf'].resolve()}")
    return 0
