"""A full robust-accuracy evaluation: evalkit's harness (compaction: each attack only sees the
points still robust) vs the usual torchattacks glue (every attack on every point, worst case
combined afterwards), same model, data, attacks (FGSM + PGD-20, eps/4 steps, random start).

Both give a worst-case robust accuracy; the ratio of wall times is printed. The model is a
small CNN trained for three quick epochs on the bundled data (or ``--ckpt``), so that a realistic
share of points is robust after the first attack.

    python bench/eval_compaction.py [--ckpt model.pt] [--n 1000] [--eps 8/255] [--device auto]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from evalkit.checkpoint import load_model
from evalkit.data import load_split
from evalkit.evaluation import EvalConfig, evaluate
from evalkit.training import TrainConfig, train
from evalkit.utils.device import resolve_device
from evalkit.utils.parse import parse_eps


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--ckpt", default=None)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--eps", default="8/255")
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    import torchattacks

    device = resolve_device(args.device)
    eps = parse_eps(args.eps)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.ckpt
        if ckpt is None:
            ckpt = train(
                TrainConfig(
                    dataset="fashion-mnist-mini",
                    arch="smallcnn",
                    defense="standard",
                    epochs=3,
                    n_train=4500,
                    out=str(Path(tmp) / "model"),
                    progress=False,
                    device=str(device),
                )
            )
        t0 = time.perf_counter()
        summary = evaluate(
            EvalConfig(
                ckpt=ckpt,
                attacks=["fgsm", "pgd"],
                eps=[args.eps],
                n=args.n,
                batch_size=args.batch_size,
                out=str(Path(tmp) / "run"),
                sanity=False,
                progress=False,
                echo=False,
                device=str(device),
            )
        )
        t_ours = time.perf_counter() - t0

        model, meta = load_model(ckpt, device=device)
        data = load_split(meta.dataset, "test").first(args.n)
        for p in model.parameters():
            p.requires_grad_(False)
        atks = [
            torchattacks.FGSM(model, eps=eps),
            torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=20, random_start=True),
        ]
        t0 = time.perf_counter()
        robust = 0
        for start in range(0, len(data), args.batch_size):
            x = data.float_batch(slice(start, start + args.batch_size)).to(device)
            y = data.y[start : start + args.batch_size].to(device)
            with torch.no_grad():
                ok = model(x).argmax(1) == y
            for atk in atks:
                x_adv = atk(x, y)
                with torch.no_grad():
                    ok &= model(x_adv).argmax(1) == y
            robust += int(ok.sum())
        t_ta = time.perf_counter() - t0
    print(
        f"device={device} n={args.n} eps={args.eps} attacks=FGSM,PGD-20 clean={summary['clean_accuracy']:.3f}"
    )
    print(f"{'evaluation':<44}{'seconds':>9}{'worst-case acc':>16}")
    print(
        f"{'evalkit harness (compaction, run dir, resume)':<44}{t_ours:>9.2f}{summary['worst_case'][0]['robust_accuracy']:>16.3f}"
    )
    print(
        f"{'torchattacks, every attack on every point':<44}{t_ta:>9.2f}{robust / len(data):>16.3f}"
    )
    print(f"speed-up of evalkit: {t_ta / t_ours:.2f}x")


if __name__ == "__main__":
    main()
