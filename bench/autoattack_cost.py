"""Cost of AutoAttack-style evaluation: pyautoattack vs evalkit's own APGD-CE + APGD-T.

For one PGD-AT smallcnn on fashion-mnist-mini and the same test points, in one run, prints
robust accuracy, images forwarded / backpropagated through the model
(:class:`evalkit.evaluation.units.CostCounter`) and wall time of

(a) pyautoattack ``standard`` (APGD-CE, APGD-T 9 targets, FAB-T, Square 5000);
(b) pyautoattack ``custom`` [apgd-ce, apgd-t] with the standard version's settings (1 restart,
    9 targets, ``--n-iter`` iterations);
(c) evalkit :func:`~evalkit.attacks.apgd.apgd_ce_t`: APGD-CE then APGD-T on the points still
    robust, same settings, with per-iteration compaction (plain Algorithm 1);
(c+) the same with the ``aa-fast`` preset's stopping rules (its options: ``stop_plateau`` and
    ``stop_far``);
(d) torchattacks ``MultiAttack`` over FGSM, PGD-20 (step eps/4), APGD and APGDT at their
    defaults (10 steps), what a user would pick,

and the ratios (c)/(b), (c)/(a), (c+)/(b) and (c+)/(a). The model is trained with PGD-AT
(evalkit.training) unless ``--ckpt`` names an existing checkpoint; with ``--ckpt`` given but
missing, the trained model is saved there for the next run. ``--seed`` seeds the random starts of
(a), (b) and (c), to check that a result is not one seed's luck. Defaults (width 8, strides 2222) keep the CNN cheap enough for a
CPU run of 500 points in a few minutes.

    python bench/autoattack_cost.py [--n 500] [--eps 0.1] [--device auto] [--epochs 5]
        [--ckpt runs/bench_at/checkpoint.pt] [--n-iter 100] [--seed 0]
        [--skip standard,torchattacks]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

from evalkit.attacks.apgd import apgd_ce_t
from evalkit.attacks.mode import attack_mode
from evalkit.checkpoint import load_model
from evalkit.data import load_split
from evalkit.evaluation.units import CostCounter
from evalkit.training import TrainConfig, train
from evalkit.utils.device import resolve_device
from evalkit.utils.parse import parse_eps

Result = dict[str, float]
PLAIN = "(c) evalkit apgd_ce_t, plain"
FAST = "(c+) same, aa-fast's stopping rules"


def measure(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    fn: Callable[[], torch.Tensor],
) -> Result:
    """Run ``fn`` (returns x_adv) under a cost counter; check the threat model; score it."""
    counter = CostCounter(model)
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    x_adv = fn().detach()
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    counter.close()
    fwd, bwd = counter.snapshot()
    d = (x_adv - x).flatten(1).abs().amax(1)
    if float(d.max()) > eps * (1 + 1e-5) + 1e-6 or x_adv.min() < 0 or x_adv.max() > 1:
        raise RuntimeError(f"x_adv leaves the threat model (max |delta| {float(d.max()):.4g})")
    with torch.no_grad():
        robust = (model(x_adv).argmax(1) == y).float().mean().item()
    return {"robust": robust, "fwd": fwd, "bwd": bwd, "seconds": seconds}


def pyautoattack_run(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    custom: bool,
    n_iter: int,
    seed: int,
) -> torch.Tensor:
    from pyautoattack import AutoAttack

    kw = {"version": "custom", "attacks": ["apgd-ce", "apgd-t"]} if custom else {}
    aa = AutoAttack(model, norm="Linf", eps=eps, seed=seed, device=x.device, **kw)
    aa.verbose = False
    if custom:  # the standard version's settings ('custom' keeps APGD-CE's 5 restarts)
        aa.apgd.n_restarts = 1
        aa.apgd_targeted.n_target_classes = 9
        aa.apgd_targeted.n_restarts = 1
        aa.apgd.n_iter = aa.apgd_targeted.n_iter = n_iter
    tracer = sys.gettrace()  # its dynamic-defense check ends with settrace(None)
    try:
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            return aa.run_standard_evaluation(x, y, batch_size=len(x))[0]
    finally:
        sys.settrace(tracer)


def evalkit_run(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    n_iter: int,
    seed: int,
    fast: bool,
) -> torch.Tensor:
    """APGD-CE, then APGD-T on the points still robust (:func:`apgd_ce_t`, the ``aa-fast``
    chain); ``fast`` turns on the stopping rules the ``aa-fast`` preset turns on."""
    from evalkit.evaluation.protocol import PRESETS

    preset = dict(PRESETS["aa-fast"].attacks[0].options)
    rules = {k: v for k, v in preset.items() if k.startswith(("stop_", "skip_"))}
    return apgd_ce_t(
        model,
        x,
        y,
        eps=eps,
        n_iter=n_iter,
        n_target_classes=9,
        **(rules if fast else {}),
        generator=torch.Generator().manual_seed(seed),
    )


def torchattacks_run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float):
    import torchattacks

    atk = torchattacks.MultiAttack(
        [
            torchattacks.FGSM(model, eps=eps),
            torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=20, random_start=True),
            torchattacks.APGD(model, eps=eps, seed=0),
            torchattacks.APGDT(model, eps=eps, seed=0, n_classes=10),
        ]
    )
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(0)
        return atk(x, y)


def get_model(args: argparse.Namespace, device: torch.device, eps: float, tmp: str):
    ckpt = Path(args.ckpt) if args.ckpt else None
    if ckpt is None or not ckpt.exists():
        out = ckpt.parent if ckpt is not None else Path(tmp) / "model"
        t0 = time.perf_counter()
        path = train(
            TrainConfig(
                dataset="fashion-mnist-mini",
                arch="smallcnn",
                defense="at",
                epochs=args.epochs,
                eps=eps,
                arch_kwargs={"width": args.width, "strides": args.strides},
                out=str(out),
                progress=False,
                device=str(device),
            )
        )
        print(f"trained PGD-AT smallcnn in {time.perf_counter() - t0:.1f}s: {path}")
        ckpt = Path(path)
    model, meta = load_model(ckpt, device=device)
    return model.eval(), meta


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=500, help="test points (default 500)")
    ap.add_argument("--eps", default="0.1", help="Linf budget (default 0.1)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, default=5, help="PGD-AT epochs when training")
    ap.add_argument("--width", type=int, default=8, help="smallcnn width when training")
    ap.add_argument("--strides", default="2222", help="smallcnn strides when training")
    ap.add_argument("--ckpt", default=None, help="load this checkpoint (train and save if missing)")
    ap.add_argument("--n-iter", type=int, default=100, help="APGD iterations for (b) and (c)")
    ap.add_argument("--seed", type=int, default=0, help="random starts of (a), (b), (c)")
    ap.add_argument(
        "--skip", default="", help="comma list of rows to skip: standard, custom, torchattacks"
    )
    args = ap.parse_args()
    device = resolve_device(args.device)
    eps = parse_eps(args.eps)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    with tempfile.TemporaryDirectory() as tmp:
        model, meta = get_model(args, device, eps, tmp)
    data = load_split(meta.dataset or "fashion-mnist-mini", "test").first(args.n)
    x = data.float_batch(torch.arange(len(data))).to(device)
    y = torch.as_tensor(data.y).to(device)

    rows: dict[str, Result] = {}
    with attack_mode(model):
        with torch.no_grad():
            clean = (model(x).argmax(1) == y).float().mean().item()
        if "standard" not in skip:
            rows["(a) pyautoattack standard"] = measure(
                model,
                x,
                y,
                eps,
                lambda: pyautoattack_run(model, x, y, eps, False, args.n_iter, args.seed),
            )
        if "custom" not in skip:
            rows["(b) pyautoattack custom apgd-ce+apgd-t"] = measure(
                model,
                x,
                y,
                eps,
                lambda: pyautoattack_run(model, x, y, eps, True, args.n_iter, args.seed),
            )
        for key, fast in ((PLAIN, False), (FAST, True)):
            rows[key] = measure(
                model,
                x,
                y,
                eps,
                lambda fast=fast: evalkit_run(model, x, y, eps, args.n_iter, args.seed, fast),
            )
        if "torchattacks" not in skip:
            rows["(d) torchattacks FGSM+PGD20+APGD+APGDT"] = measure(
                model, x, y, eps, lambda: torchattacks_run(model, x, y, eps)
            )

    print(
        f"device={device} threads={torch.get_num_threads()} n={len(x)} eps={args.eps} "
        f"n_iter={args.n_iter} clean={clean:.4f}"
    )
    print(f"{'evaluation':<42}{'robust':>8}{'forward':>11}{'backward':>11}{'fwd+bwd':>11}{'s':>9}")
    for name, r in rows.items():
        print(
            f"{name:<42}{r['robust']:>8.4f}{r['fwd']:>11d}{r['bwd']:>11d}"
            f"{r['fwd'] + r['bwd']:>11d}{r['seconds']:>9.2f}"
        )
    for mine in (PLAIN, FAST):
        c = rows[mine]
        for key in ("(b) pyautoattack custom apgd-ce+apgd-t", "(a) pyautoattack standard"):
            if key in rows:
                r = rows[key]
                print(
                    f"{mine[:4]}/{key[:3]}: fwd+bwd "
                    f"{(c['fwd'] + c['bwd']) / (r['fwd'] + r['bwd']):.3f}  "
                    f"bwd {c['bwd'] / r['bwd']:.3f}  time {c['seconds'] / r['seconds']:.3f}  "
                    f"robust {100 * (c['robust'] - r['robust']):+.1f} points"
                )
    c = rows[PLAIN]
    # what the plain algorithm cannot avoid: every point still robust at the end gets 9 targets
    # x n_iter gradient steps (the stopping rules of (c+) are what go below it)
    floor = round(c["robust"] * len(x)) * 9 * args.n_iter
    print(f"backward floor of plain APGD-T on the finally robust points: {floor}")


if __name__ == "__main__":
    main()
