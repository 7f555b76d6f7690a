"""What a study scale costs on this machine, measured, before committing hours to it.

Trains every model of the chosen studies for one epoch on two subsets of the scale's training
split (``--subset`` images and twice that) with the scale's own options (arch, width, training
attack, batch size); the difference of the two times is the per-image cost without the fixed
costs (start-up, data loading, checkpoint writing) that dominate a small run, and those fixed
costs are counted once per model. Each size is timed ``--repeats`` times and the least kept.
It extrapolates linearly to the full split, the scale's epochs and its training seeds; with
``--eval-ckpt`` it also times the scale's protocol on a trained checkpoint (a model trained on a
few hundred images is too weak to time: its points are misclassified and never attacked). The
extrapolation is the point: a `medium` study is hours per model on a CPU, and the number a user
needs is how many. Both timings are wall times of this process on this machine; run it alone.

    python bench/study_cost.py --scale medium --studies channels,cas-cifs \
        --data-root DIR_WITH_FASHION_MNIST [--subset 1000] [--repeats 2] \
        [--eval-ckpt CKPT --eval-n 50] [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from evalkit import evaluate, train
from evalkit.data import load_split
from evalkit.pipelines.studies import STUDIES, scale_for


def _models(studies: list[str], scale: Any) -> dict[str, str]:
    """key -> defense SPEC of every model the studies train (shared models counted once)."""
    out: dict[str, str] = {}
    for name in studies:
        for m in STUDIES[name].models(scale):
            out.setdefault(m.key, m.defense)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--scale", default="medium")
    ap.add_argument("--studies", default="channels,cas-cifs")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--subset", type=int, default=1000, help="training images timed per model")
    ap.add_argument("--repeats", type=int, default=2, help="timings per size (the least kept)")
    ap.add_argument("--eval-ckpt", default=None, help="trained checkpoint to time evaluation on")
    ap.add_argument("--eval-n", type=int, default=50, help="test images timed in evaluation")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="also write the measurements here")
    args = ap.parse_args()
    scale = scale_for(args.scale, data_root=args.data_root)
    studies = [s.strip() for s in args.studies.split(",") if s.strip()]
    n_train = len(load_split(scale.dataset, "train", root=scale.data_root).y)
    opts = {k: v for k, v in scale.train_options.items() if k != "n_train"}
    full = int(scale.train_options.get("n_train") or n_train)
    rows = []
    runs = itertools.count()
    with tempfile.TemporaryDirectory() as tmp:

        def timed_train(key: str, defense: str, n: int) -> tuple[float, Path]:
            t0 = time.perf_counter()
            ckpt = train(
                dataset=scale.dataset,
                arch=scale.arch,
                defense=defense,
                epochs=1,
                eps=scale.eps,
                **opts,
                n_train=n,
                val_size=0,
                seed=0,
                device=args.device,
                data_root=scale.data_root,
                progress=False,
                out=Path(tmp) / f"{key}-{n}-{next(runs)}",
            )
            return time.perf_counter() - t0, ckpt

        timed_train("warmup", "standard", 64)  # imports, data cache, first-call costs
        for key, defense in _models(studies, scale).items():
            # the least-disturbed of --repeats timings at each size (other load only adds time)
            t1 = min(timed_train(key, defense, args.subset)[0] for _ in range(args.repeats))
            t2 = min(timed_train(key, defense, 2 * args.subset)[0] for _ in range(args.repeats))
            if t2 <= t1:
                raise SystemExit(
                    f"{key}: {2 * args.subset} images took no longer than {args.subset} "
                    f"({t2:.2f} s vs {t1:.2f} s): raise --subset or run on an idle machine"
                )
            per_image = (t2 - t1) / args.subset
            fixed = max(t1 - per_image * args.subset, 0.0)  # once per training run
            per_epoch = per_image * full
            model_s = per_epoch * scale.epochs + fixed
            rows.append(
                {
                    "model": key,
                    "defense": defense,
                    "ms_per_image": round(per_image * 1000, 2),
                    "fixed_s": round(fixed, 1),
                    "epoch_min": round(per_epoch / 60, 1),
                    "model_h": round(model_s / 3600, 2),
                }
            )
            print(
                f"{key:10s} {defense:10s} {per_image * 1000:6.2f} ms/image "
                f"({t1:.1f} s / {t2:.1f} s on {args.subset} / {2 * args.subset}) -> "
                f"{per_epoch / 60:6.1f} min/epoch, {rows[-1]['model_h']:.2f} h per model"
            )
    seeds = len(scale.seeds)
    train_h = sum(r["model_h"] for r in rows) * seeds
    result: dict[str, Any] = {
        "scale": scale.describe(),
        "studies": studies,
        "subset": args.subset,
        "repeats": args.repeats,
        "models": rows,
        "training_h": round(train_h, 2),
    }
    print(
        f"training: {train_h:.1f} h for {len(rows)} models x {seeds} seeds x {scale.epochs} "
        f"epochs on {full} images"
    )
    if args.eval_ckpt:
        # a model trained for a few hundred images is too weak to time an evaluation on: most
        # points are misclassified and never attacked, so only a real checkpoint is timed
        t0 = time.perf_counter()
        evaluate(
            args.eval_ckpt,
            scale.dataset,
            eps=scale.eps,
            preset=scale.preset,
            n=args.eval_n,
            device=args.device,
            data_root=scale.data_root,
            progress=False,
            echo=False,
        )
        t_eval = time.perf_counter() - t0
        result["eval_min"] = round(t_eval * scale.n_eval / args.eval_n / 60, 1)
        print(
            f"evaluation of {args.eval_ckpt} ({scale.preset}, {scale.n_eval} images): "
            f"{result['eval_min']:.1f} min (from {t_eval:.1f} s on {args.eval_n})"
        )
    else:
        print("evaluation not timed (pass --eval-ckpt with a trained checkpoint of this scale)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
