"""SAP (stochastic activation pruning) on a trained small CNN: what Monte-Carlo scoring and EOT
change. Printed from one run on the same points:

* the harness's clean accuracy (Monte-Carlo mean over ``--draws`` passes, with its standard
  error) next to an independent ``--draws``-pass mean computed here by hand;
* robust accuracy under plain PGD-20 (one stochastic pass per gradient, ``eot=1``) and under
  EOT-20 PGD-20, both scored by Monte Carlo (mean score and "correct on all draws").

    python bench/sap_scoring.py [--ckpt model.pt] [--n 200] [--eps 0.05] [--draws 20]

Without ``--ckpt`` a standard small CNN is trained for 4 epochs on the bundled data.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

import evalkit
from evalkit.checkpoint import load_model
from evalkit.data import load_split


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--ckpt", default=None)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--eps", default="0.05")
    ap.add_argument("--draws", type=int, default=20)
    args = ap.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.ckpt or evalkit.train(
            dataset="fashion-mnist-mini",
            arch="smallcnn",
            defense="standard",
            epochs=4,
            out=f"{tmp}/std",
            progress=False,
        )
        kw = dict(
            defense="sap",
            preset="pgd",
            eps=args.eps,
            n=args.n,
            mc_draws=args.draws,
            progress=False,
            echo=False,
        )
        plain = evalkit.evaluate(ckpt, eot=1, **kw).summary
        eot = evalkit.evaluate(ckpt, **kw).summary
        model, _ = load_model(ckpt, defense="sap")
    split = load_split("fashion-mnist-mini", "test").first(args.n)
    x, y = split.float_batch(torch.arange(len(split))), split.y
    torch.manual_seed(12345)
    with torch.no_grad():
        hand = torch.stack([(model(x).argmax(1) == y).float() for _ in range(args.draws)])
    print(
        f"SAP on {'a standard smallcnn (4 epochs)' if not args.ckpt else args.ckpt}; "
        f"n={args.n}; eps={args.eps}; draws={args.draws}"
    )
    print(
        f"clean accuracy: harness {plain['clean_accuracy']:.4f} (s.e. "
        f"{plain['clean_mc_std_error']:.4f}; correct on all draws "
        f"{plain['clean_accuracy_all_draws']:.4f}) vs independent {args.draws}-draw mean "
        f"{hand.mean().item():.4f}"
    )
    for name, s in (("plain PGD-20 (eot=1)", plain), ("EOT-20 PGD-20", eot)):
        w = s["worst_case"][0]
        print(
            f"{name:<22} robust {w['robust_accuracy']:.4f} (s.e. {w['mc_std_error']:.4f}), "
            f"correct on all draws {w['robust_accuracy_all_draws']:.4f}; scoring "
            f"{s['scoring']['semantics']}"
        )
    print(f"wall {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
