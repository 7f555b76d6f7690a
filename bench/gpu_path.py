"""The speed opt-ins against fp32 on one model: robust accuracy, agreement, time.

For one checkpoint (trained here with PGD-AT when ``--ckpt`` is not given) runs
:func:`evalkit.evaluate` with the same attacks, data and seed in fp32, bf16, fp16,
channels-last, ``torch.compile`` and bf16 + channels-last + compile, and prints per variant:
robust accuracy, its difference from fp32, the share of test points whose worst-case outcome
equals fp32's, the protocol's seconds and the speed-up over fp32. Meant for a GPU
(``bench/gpu.sh``); ``--device cpu --n 64`` is a smoke run of the same code.

    python bench/gpu_path.py [--ckpt model.pt] [--n 1000] [--attacks fgsm,pgd,apgd-ce-t]
        [--device auto] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

import evalkit

VARIANTS = {
    "fp32": {},
    "bf16": {"precision": "bf16"},
    "fp16": {"precision": "fp16"},
    "channels_last": {"channels_last": True},
    "compile": {"compile": True},
    "bf16+channels_last+compile": {"precision": "bf16", "channels_last": True, "compile": True},
}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--ckpt", default=None)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--eps", default="0.1")
    ap.add_argument("--attacks", default="fgsm,pgd,apgd-ce-t")
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.ckpt or evalkit.train(
            dataset="fashion-mnist-mini",
            arch=args.arch,
            defense="at",
            epochs=args.epochs,
            eps=float(args.eps),
            attack_steps=5,
            width=16,
            out=f"{tmp}/model",
            progress=False,
            device=args.device,
        )
        base = None
        for name in [v.strip() for v in args.variants.split(",") if v.strip()]:
            t0 = time.perf_counter()
            result = evalkit.evaluate(
                ckpt,
                "fashion-mnist-mini",
                attacks=args.attacks,
                eps=args.eps,
                n=args.n,
                batch_size=args.batch_size,
                seed=0,
                device=args.device,
                sanity=False,
                progress=False,
                echo=False,
                **VARIANTS[name],
            )
            seconds = time.perf_counter() - t0
            outcome = torch.tensor(result.examples[f"worst@{args.eps}:score"].to_numpy())
            if base is None:
                base = (result.robust_accuracy, outcome, seconds)
            row = {
                "variant": name,
                "robust_accuracy": result.robust_accuracy,
                "difference_vs_fp32": result.robust_accuracy - base[0],
                "agreement_vs_fp32": float((outcome == base[1]).float().mean()),
                "seconds": round(seconds, 2),
                "speedup_vs_fp32": base[2] / seconds,
                "device": str(result.summary.get("environment", {}).get("device", args.device)),
            }
            rows.append(row)
            print(
                f"{name:<28} robust {row['robust_accuracy']:.4f} ({row['difference_vs_fp32']:+.4f})"
                f"  agree {row['agreement_vs_fp32']:.3f}  {seconds:7.1f}s  x{row['speedup_vs_fp32']:.2f}",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
