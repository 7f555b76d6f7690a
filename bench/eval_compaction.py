"""The harness against the baseline a user would actually pick: torchattacks ``MultiAttack``,
which also attacks only the points still unbroken. Same model, data and attacks (FGSM, then
PGD-20 with step eps/4 and a random start). Printed, from one run: robust accuracy, forward and
backward propagations (counted by the same hook on the model) and wall time for both; the
harness with and without its sanity checks; the checks' share of the protocol's propagations
(target <= 25%); and the ratios.

    python bench/eval_compaction.py [--ckpt model.pt] [--n 1000] [--eps 0.1] [--device auto]

Without ``--ckpt`` a small CNN is PGD-AT-trained for three quick epochs on the bundled data.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from bench_models import quick_at_model

import evalkit
from evalkit.attacks import attack_mode
from evalkit.evaluation.units import CostCounter
from evalkit.utils.device import resolve_device
from evalkit.utils.parse import parse_eps


def torchattacks_multi(model, x, y, eps, batch_size) -> tuple[float, int, int, float]:
    import torchattacks

    counter = CostCounter(model)
    t0 = time.perf_counter()
    robust = 0
    with attack_mode(model):
        multi = torchattacks.MultiAttack(
            [
                torchattacks.FGSM(model, eps=eps),
                torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=20, random_start=True),
            ]
        )
        for i in range(0, len(y), batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            adv = multi(xb, yb)
            with torch.no_grad():
                robust += int((model(adv).argmax(1) == yb).sum())
    wall = time.perf_counter() - t0
    counter.close()
    return robust / len(y), counter.forward, counter.backward, wall


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--ckpt", default=None)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--eps", default="0.1")
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = resolve_device(args.device)
    eps = parse_eps(args.eps)
    with tempfile.TemporaryDirectory() as tmp:
        model, x, y = quick_at_model(args.ckpt, args.n, eps, device, tmp)
        common = dict(
            eps=args.eps,
            attacks="fgsm,pgd",
            batch_size=args.batch_size,
            device=str(device),
            progress=False,
            echo=False,
        )
        t0 = time.perf_counter()
        plain = evalkit.evaluate(model, (x.cpu(), y.cpu()), sanity=False, **common)
        t_plain = time.perf_counter() - t0
        t0 = time.perf_counter()
        checked = evalkit.evaluate(model, (x.cpu(), y.cpu()), **common)
        t_checked = time.perf_counter() - t0
        ta_acc, ta_f, ta_b, ta_wall = torchattacks_multi(model, x, y, eps, args.batch_size)

    def props(s):
        c = s["cost"]
        return c["forward_passes"], c["backward_passes"]

    pf, pb = props(plain.summary)
    cf, cb = props(checked.summary)
    sanity = checked.summary["cost"]["sanity"]
    print(f"model {args.ckpt or 'PGD-AT smallcnn, 3 epochs'}; n={len(y)}; eps={args.eps}")
    print(f"{'':34}{'robust acc':>11}{'forward':>11}{'backward':>11}{'wall s':>9}")
    print(
        f"{'evalkit (no sanity checks)':34}{plain.robust_accuracy:>11.4f}{pf:>11,}{pb:>11,}"
        f"{t_plain:>9.2f}"
    )
    print(
        f"{'evalkit (with sanity checks)':34}{checked.robust_accuracy:>11.4f}{cf:>11,}{cb:>11,}"
        f"{t_checked:>9.2f}"
    )
    print(f"{'torchattacks MultiAttack':34}{ta_acc:>11.4f}{ta_f:>11,}{ta_b:>11,}{ta_wall:>9.2f}")
    print(
        f"sanity checks: {sanity['propagations']:,} propagations = "
        f"{100 * sanity['share_of_protocol']:.1f}% of the protocol's attack propagations "
        f"(limit {100 * sanity['limit_share']:.0f}%)"
    )
    print(
        f"ratios vs MultiAttack: propagations {(pf + pb) / max(ta_f + ta_b, 1):.3f}x, "
        f"wall {t_plain / ta_wall:.3f}x (evalkit without checks); "
        f"with checks {t_checked / ta_wall:.3f}x"
    )


if __name__ == "__main__":
    main()
