"""Is the cost evalkit announces the cost it spends? Per model and preset, one run of
:func:`evalkit.evaluate` and its ``summary.json`` cost block:

* ``upper bound``: the plan printed before the run (every point surviving every attack);
* ``forecast``: the expected cost said after the first batch (the progress bar's total from
  then on), for the clean pass and attacks;
* ``actual``: what the clean pass and attacks spent, and the run's whole total (checks,
  setup and timing included), which the same run also counts with an outside wrapper on the
  model (``outside`` must equal ``total``).

Printed: the ratios forecast/actual (target within 0.7-1.3) and upper bound/actual, and the
forecast time against the protocol's measured time.

    python bench/estimate_accuracy.py [--n 512] [--batch-size 128] [--presets fast,aa-fast,pgd]

Models: smallcnn standard and PGD-AT, trained here for two quick epochs on the bundled data
(``--ckpt LABEL=PATH`` adds or replaces). ``--json PATH`` writes the table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
import torch.nn as nn

import evalkit
from evalkit.checkpoint import load_model


class _Count(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, box):
        ctx.box = box
        return z.view_as(z)

    @staticmethod
    def backward(ctx, grad):
        ctx.box["bwd"] += int(grad.shape[0])
        return grad, None


class Outside(nn.Module):
    """Counts image forwards and backwards of ``inner``, independently of evalkit's hooks."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.box = inner, {"fwd": 0, "bwd": 0}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.box["fwd"] += int(x.shape[0])
        z = self.inner(x)
        return _Count.apply(z, self.box) if torch.is_grad_enabled() else z


def _models(tmp: str, extra: list[str]) -> dict[str, str]:
    out = {}
    for label, defense in (("standard", "standard"), ("pgd-at", "at")):
        out[label] = evalkit.train(
            dataset="fashion-mnist-mini",
            arch="smallcnn",
            defense=defense,
            epochs=2,
            eps=0.1,
            attack_steps=5,
            width=16,
            out=f"{tmp}/{label}",
            progress=False,
            device="cpu",
        )
    for item in extra:
        label, path = item.split("=", 1)
        out[label] = path
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--eps", default="0.1")
    ap.add_argument("--presets", default="fast,aa-fast,pgd")
    ap.add_argument("--ckpt", action="append", default=[], metavar="LABEL=PATH")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, ckpt in _models(tmp, args.ckpt).items():
            for preset in args.presets.split(","):
                inner, _ = load_model(ckpt)
                model = Outside(inner)
                t0 = time.perf_counter()
                s = evalkit.evaluate(
                    model,
                    "fashion-mnist-mini",
                    preset=preset,
                    eps=args.eps,
                    n=args.n,
                    batch_size=args.batch_size,
                    progress=False,
                    echo=False,
                ).summary
                wall = time.perf_counter() - t0
                c = s["cost"]
                est = c["estimate"]
                actual = sum(
                    c[k]["forward_passes"] + c[k]["backward_passes"] for k in ("clean", "protocol")
                )
                total = c["forward_passes"] + c["backward_passes"]
                protocol_s = c["protocol"]["time_s"] + c["clean"]["time_s"]  # units only
                row = {
                    "model": label,
                    "preset": preset,
                    "n": args.n,
                    "robust_accuracy": s["worst_case"][0]["robust_accuracy"],
                    "upper_bound": est["upper_bound"],
                    "forecast": est["expected"],
                    "forecast_from_points": est.get("from_points"),
                    "actual_protocol": actual,
                    "total": total,
                    "outside_count": model.box["fwd"] + model.box["bwd"],
                    "forecast_over_actual": est["expected"] / actual if est["expected"] else None,
                    "upper_bound_over_actual": est["upper_bound"] / actual,
                    "forecast_seconds": est.get("expected_seconds"),
                    "protocol_seconds": round(protocol_s, 2),
                    "wall_seconds": round(wall, 2),
                }
                rows.append(row)
                ratio = row["forecast_over_actual"]
                print(
                    f"{label:<9} {preset:<8} robust {row['robust_accuracy']:.3f}  "
                    f"plan<= {row['upper_bound']:>9,}  forecast {row['forecast'] or 0:>9,} "
                    f"(from {row['forecast_from_points']} pts)  actual {actual:>9,}  "
                    f"forecast/actual {ratio if ratio is None else round(ratio, 3)}  "
                    f"plan/actual {row['upper_bound_over_actual']:.2f}  total {total:,} "
                    f"= outside {row['outside_count']:,}: {total == row['outside_count']}  "
                    f"time forecast {row['forecast_seconds'] or 0:.1f}s vs {protocol_s:.1f}s",
                    flush=True,
                )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
