"""Exact cycle detection for fixed-step PGD: iterations saved, result unchanged.

Runs evalkit's evaluation PGD (best iterate, per-point early exit) on the same model, data and
random starts twice, without and with cycle detection (``pgd(cycles=0)`` vs the default
``cycles=CYCLE_DEPTH``), and a third time as the full run (no early exit, no cycle detection),
for several step counts. Printed per step count: robust accuracy, whether the returned iterates
of the three runs are bit-identical (``torch.equal``), forward + backward propagations counted by
one hook on the model (:class:`evalkit.evaluation.units.CostCounter`), and the share of
propagations cycle detection saves over early exit alone.

    python bench/pgd_cycles.py [--ckpt model.pt] [--n 500] [--eps 0.1] [--steps 20,50,100]

Without ``--ckpt`` a small CNN is PGD-AT-trained for three quick epochs on the bundled data (an
adversarially trained model: most of its points stay unbroken, which is where fixed-step PGD
spends its iterations). ``--json PATH`` writes the table.

Adversarial training's inner loop is not given the shortcut: it crafts with BatchNorm in train
mode, where each point's forward depends on the others in the batch (batch statistics), so a
point leaving the batch changes the rest and the result would no longer be the full run's.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
from bench_models import quick_at_model

from evalkit.attacks import attack_mode
from evalkit.attacks.pgd import CYCLE_DEPTH, pgd
from evalkit.evaluation.units import CostCounter
from evalkit.utils.device import resolve_device
from evalkit.utils.parse import parse_eps
from evalkit.utils.seeding import make_generator


def _run(model, x, y, eps, steps, batch_size, **options) -> tuple[torch.Tensor, int, float]:
    """PGD over the batches of (x, y); the iterates, fwd+bwd propagations and seconds."""
    counter = CostCounter(model)
    t0 = time.perf_counter()
    out = []
    with attack_mode(model):
        for i in range(0, len(y), batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            out.append(pgd(model, xb, yb, eps, steps=steps, generator=make_generator(i), **options))
    wall = time.perf_counter() - t0
    counter.close()
    return torch.cat(out), counter.forward + counter.backward, wall


def _robust(model, x_adv, y) -> float:
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == y).float().mean())


def _same_outcome(model, a: torch.Tensor, b: torch.Tensor, y: torch.Tensor) -> bool:
    """The same points broken, and bit-identical iterates on the unbroken ones."""
    with torch.no_grad():
        held_a, held_b = model(a).argmax(1) == y, model(b).argmax(1) == y
    return bool(torch.equal(held_a, held_b) and torch.equal(a[held_a], b[held_b]))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--ckpt", default=None)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--eps", default="0.1")
    ap.add_argument("--steps", default="20,50,100")
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    device = resolve_device(args.device)
    eps = parse_eps(args.eps)
    step_counts = [int(s) for s in args.steps.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model, x, y = quick_at_model(args.ckpt, args.n, eps, device, tmp)
        for steps in step_counts:
            kw = dict(batch_size=args.batch_size, keep_best=True)
            full, cost_full, t_full = _run(model, x, y, eps, steps, **kw, cycles=0)
            exit_only, cost_exit, t_exit = _run(
                model, x, y, eps, steps, **kw, early_stop=True, cycles=0
            )
            cyc, cost_cyc, t_cyc = _run(
                model, x, y, eps, steps, **kw, early_stop=True, cycles=CYCLE_DEPTH
            )
            row = {
                "steps": steps,
                "robust_accuracy": _robust(model, cyc, y),
                "identical_to_early_exit": bool(torch.equal(cyc, exit_only)),
                # the full run keeps, among a broken point's misclassified iterates, the one of
                # lowest margin, early exit the first: the same points break, and the unbroken
                # ones return the same last iterate
                "identical_to_full_run": _same_outcome(model, cyc, full, y),
                "propagations_full": cost_full,
                "propagations_early_exit": cost_exit,
                "propagations_cycles": cost_cyc,
                "saved_vs_early_exit": 1 - cost_cyc / cost_exit,
                "saved_vs_full": 1 - cost_cyc / cost_full,
                "seconds_full": round(t_full, 2),
                "seconds_early_exit": round(t_exit, 2),
                "seconds_cycles": round(t_cyc, 2),
            }
            rows.append(row)
            print(
                f"PGD-{steps:<4} robust {row['robust_accuracy']:.3f}  identical to early exit "
                f"{row['identical_to_early_exit']}, same outcome as full run "
                f"{row['identical_to_full_run']}  fwd+bwd full {cost_full:,}  early exit "
                f"{cost_exit:,}  +cycles {cost_cyc:,}  saved {row['saved_vs_early_exit']:.1%} "
                f"vs early exit, {row['saved_vs_full']:.1%} vs full  "
                f"({t_full:.1f}s / {t_exit:.1f}s / {t_cyc:.1f}s)",
                flush=True,
            )
    meta = {"n": args.n, "eps": args.eps, "cycle_depth": CYCLE_DEPTH, "ckpt": args.ckpt}
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
