"""Calibrates APGD's ``stop_far`` rule: where APGD-CE + APGD-T spend their propagations, and what
stopping far points at the first checkpoint costs in breaks.

For each configuration (model, first test point, attack seed) it *traces* the plain chain of
:func:`evalkit.attacks.apgd.apgd_ce_t` (APGD-CE, then the 9 targets, 100 iterations each, no
early exit, no stopping rule), recording the logits of every iterate of every run on every
clean-correct point, with the random starts the real attack draws. It then *replays* APGD's
step-size logic (checkpoints, halving, per-point early exit, ``stop_plateau``) on those logits,
which gives the exact propagations and robust points of the chain under any stopping rule,
without attacking again. The replay is checked against the real attack on the first
configuration of each architecture (propagations and robust points must be equal; the script
fails otherwise). Losses are computed in the logits' dtype, as the attack computes them.

Reported per configuration:

* the closest approach (untargeted DLR) at the first checkpoint ``w_1`` = 22 of every run that
  breaks a point only after it (the runs ``stop_far`` can cut short), and the points that no run
  breaks by ``w_1`` (the breaks ``stop_far`` can lose);
* for each threshold ``tau``, the chain's propagations with ``stop_plateau`` and
  ``stop_far`` at ``tau`` relative to the plain chain, and the breaks lost against it.

Models come from ``bench/aa_fast_models.py``'s recipe (width 16, 3 epochs, PGD-AT eps 0.1, the
``-s1`` suffix selects training seed 1), trained into ``--save`` unless already there.

    python bench/apgd_stop_far.py [--save DIR] [--json PATH]
        [--config smallcnn-at:0:0 --config resnet18-at:300:1 ...]
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from aa_fast_models import MODELS, split_label, train_model  # noqa: E402

from evalkit.attacks.mode import attack_mode  # noqa: E402
from evalkit.attacks.pgd import random_init  # noqa: E402
from evalkit.checkpoint import load_model  # noqa: E402
from evalkit.data import load_split  # noqa: E402
from evalkit.errors import EvalkitError  # noqa: E402
from evalkit.evaluation.protocol import PRESETS  # noqa: E402
from evalkit.evaluation.units import CostCounter  # noqa: E402
from evalkit.utils.parse import parse_eps  # noqa: E402

APGD = importlib.import_module("evalkit.attacks.apgd")
N_ITER = 100
N_TARGETS = 9
CONFIGS = (
    "smallcnn-at:0:0",
    "resnet18-at:0:0",
    "smallcnn-at-s1:0:0",
    "resnet18-at-s1:0:0",
    "smallcnn-at:300:1",
    "resnet18-at:300:1",
)
TAUS = (0.3, 0.4, 0.5, 0.6, 0.7)


@dataclass
class Trace:
    """Per run r, iterate t (0 = the random start) and clean-correct point i: the run's loss
    ``f[r, t, i]``, the untargeted DLR ``d`` and whether the iterate misclassifies ``mis``."""

    f: torch.Tensor  # (R, T + 1, m) the logits' dtype
    d: torch.Tensor  # (R, T + 1, m) the logits' dtype
    mis: torch.Tensor  # (R, T + 1, m) bool
    n_points: int  # all points, clean-correct or not (the clean pass covers them all)


class _Recorder(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.log: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        self.log.append(out.detach().clone())
        return out


def trace(model, x, y, eps: float, seed: int) -> Trace:
    """The plain chain's logits on every iterate, with the real attack's random starts (drawn on
    the whole batch, one draw per run, in run order)."""
    rec = _Recorder(model)
    ball = APGD._Ball("linf", eps)
    with torch.no_grad():
        clean = model(x)
    ci = (clean.argmax(1) == y).nonzero().squeeze(1)
    targets = APGD.target_classes(clean, y, N_TARGETS)
    runs = [(APGD._ce, None)] + [(APGD._dlr_t, targets[:, j]) for j in range(N_TARGETS)]
    gen = torch.Generator().manual_seed(seed)
    fs, ds, ms = [], [], []
    yc = y[ci]
    for loss_fn, t in runs:
        delta0 = random_init(x, eps, "linf", gen)
        rec.log = []
        tc = None if t is None else t[ci]
        APGD._run(rec, x[ci], yc, tc, delta0[ci], loss_fn, ball, N_ITER, 0.75, False, 1)
        z = torch.stack(rec.log)  # (T + 1, m, K), the model's dtype
        if t is None:
            f = torch.stack([F.cross_entropy(zt, yc, reduction="none") for zt in z])
        else:
            f = torch.stack([APGD.dlr_targeted_loss(zt, yc, tc) for zt in z])
        fs.append(f)
        ds.append(torch.stack([APGD.dlr_loss(zt, yc) for zt in z]))
        ms.append(z.argmax(2) != yc)
    return Trace(torch.stack(fs), torch.stack(ds), torch.stack(ms), len(x))


def _replay_run(f, d, mis, plateau: bool, far: float | None):
    """One run of APGD's Algorithm 1 bookkeeping on traced losses (``_run``'s logic): returns
    per point the index of its last iterate, whether it broke, and its closest approach."""
    t_max, m = f.shape
    w_list = APGD.checkpoints(N_ITER)
    w_set, w_first = set(w_list), w_list[0]
    cur = f[0].clone()
    fm, fm_last, fm_last2, f0 = cur.clone(), cur.clone(), cur.clone(), cur.clone()
    red_last = torch.zeros(m, dtype=torch.bool)
    cnt = torch.zeros(m, dtype=torch.float64)
    closest = d[0].clone()
    active, broken = ~mis[0], mis[0].clone()
    last = torch.zeros(m, dtype=torch.long)
    w_prev = 0
    for k in range(t_max - 1):
        new = f[k + 1].clone()
        inc = new > cur
        fm = torch.maximum(fm, new)
        closest = torch.where(active, torch.maximum(closest, d[k + 1]), closest)
        now_mis = mis[k + 1] & active
        if k == 0:
            fm_last = fm.clone()
        stop = torch.zeros(m, dtype=torch.bool)
        if k in w_set:
            halve = (cnt < 0.75 * (k - w_prev)) | (~red_last & (fm == fm_last))
            if plateau:
                gain = fm - fm_last2
                stop = halve & red_last & (gain <= APGD.PLATEAU_TOL * (fm - f0))
                stop &= closest < -APGD.PLATEAU_GUARD
            if far is not None and k == w_first:
                stop |= closest < -far
            fm_last2 = fm_last
            new = torch.where(halve, fm, new)
            red_last, fm_last, cnt, w_prev = halve, fm.clone(), torch.zeros_like(cnt), k
        cnt = cnt + inc.double()
        cur = new
        last = torch.where(active, torch.full_like(last, k + 1), last)
        broken |= now_mis
        active &= ~now_mis & ~stop
    return last, broken


def replay(tr: Trace, plateau: bool = True, far: float | None = None):
    """The chain with per-point early exit: (robust mask over clean-correct points, fwd+bwd)."""
    n_runs, t_max, m = tr.f.shape
    alive = torch.ones(m, dtype=torch.bool)
    cost = tr.n_points  # the clean forward pass
    for r in range(n_runs):
        last, broken = _replay_run(tr.f[r], tr.d[r], tr.mis[r], plateau, far)
        # per point: forwards at iterates 0..last, backwards at the same except the final one
        cost += int((last + 1)[alive].sum()) + int(
            torch.clamp(last + 1, max=t_max - 1)[alive].sum()
        )
        alive &= ~broken
    return alive, cost


def late_break_profile(tr: Trace) -> dict:
    """Runs that break a point only after ``w_1``: their closest approach at ``w_1``; and the
    broken points that no run breaks by ``w_1``."""
    w1 = APGD.checkpoints(N_ITER)[0]
    breaks = tr.mis.any(1)  # (R, m)
    first = torch.where(
        breaks, tr.mis.float().argmax(1), torch.full_like(breaks, 10**6, dtype=torch.long)
    )
    by_w1 = tr.d[:, : w1 + 2].amax(1)  # iterates 0..w1+1: the state the rule looks at
    late = breaks & (first > w1 + 1)
    early_any = (breaks & (first <= w1 + 1)).any(0)
    return {
        "late_breaking_runs": int(late.sum()),
        "their_closest_at_w1": sorted(round(v, 3) for v in by_w1[late].tolist()),
        "points_broken_only_late": int((breaks.any(0) & ~early_any).sum()),
        "runs_breaking": int(breaks.sum()),
    }


def check_replay(model, x, y, eps: float, seed: int, tr: Trace, ci) -> dict:
    """The real ``aa-fast`` attack against the replay: equal propagations and robust points."""
    options = dict(PRESETS["aa-fast"].attacks[0].options)
    counter = CostCounter(model)
    x_adv = APGD.apgd_ce_t(
        model, x, y, eps=eps, generator=torch.Generator().manual_seed(seed), **options
    )
    counter.close()
    fwd, bwd = counter.snapshot()
    with torch.no_grad():
        held = (model(x_adv).argmax(1) == y)[ci]
    far = APGD.STOP_FAR_DLR if options.get("stop_far") else None
    robust, cost = replay(tr, plateau=bool(options.get("stop_plateau")), far=far)
    out = {"actual": fwd + bwd, "replayed": cost, "disagreeing_points": int((held != robust).sum())}
    if out["actual"] != cost or out["disagreeing_points"]:
        raise SystemExit(f"replay does not match the attack: {out}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", action="append", default=None, metavar="MODEL:START:SEED")
    ap.add_argument("--n", type=int, default=300, help="test points per configuration")
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--save", default=None, help="models are trained into / reused from here")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.n <= 0 or args.epochs <= 0:
        ap.error("--n and --epochs must be positive integers")
    try:
        parse_eps(args.eps)
    except EvalkitError as err:
        ap.error(f"--eps: {err}")
    configs = args.config or list(CONFIGS)
    data = load_split("fashion-mnist-mini", "test")
    parsed = []
    for spec in configs:
        try:
            label, start, seed = spec.split(":")
            parsed.append((label, int(start), int(seed)))
        except ValueError:
            ap.error(f"--config takes MODEL:START:SEED (e.g. smallcnn-at:0:0), not {spec!r}")
        if split_label(parsed[-1][0])[0] not in MODELS:
            ap.error(f"--config {spec}: unknown model; choose from {', '.join(MODELS)}")
        if not 0 <= parsed[-1][1] <= len(data) - args.n:
            ap.error(
                f"--config {spec}: START must be in [0, {len(data) - args.n}] for --n {args.n} "
                f"(the split has {len(data)} points)"
            )
    checked: set[str] = set()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.save or scratch
        for spec, (label, start, seed) in zip(configs, parsed, strict=True):
            arch = label.split("-")[0]
            ckpt = Path(folder) / label / "checkpoint.pt"
            if not ckpt.exists():
                train_model(label, folder, args.epochs, args.eps, "cpu")
            model, _ = load_model(str(ckpt), device="cpu")
            idx = torch.arange(start, start + args.n)
            x = data.float_batch(idx)
            y = torch.as_tensor(data.y)[idx]
            t0 = time.perf_counter()
            with attack_mode(model):
                tr = trace(model, x, y, args.eps, seed)
                with torch.no_grad():
                    ci = (model(x).argmax(1) == y).nonzero().squeeze(1)
                check = None
                if arch not in checked:  # the first configuration of each architecture
                    check = check_replay(model, x, y, args.eps, seed, tr, ci)
                    checked.add(arch)
            plain_robust, plain_cost = replay(tr, plateau=False)
            _, plateau_cost = replay(tr, plateau=True)
            per_tau = {}
            for tau in TAUS:
                robust, cost = replay(tr, plateau=True, far=tau)
                per_tau[str(tau)] = {
                    "cost_vs_plain": round(cost / plain_cost, 4),
                    "propagations": cost,
                    "breaks_lost": int((robust & ~plain_robust).sum()),
                }
            row = {
                "config": spec,
                "clean_correct": int(tr.f.shape[2]),
                "robust_plain": int(plain_robust.sum()),
                "plain_propagations": plain_cost,
                "stop_plateau_vs_plain": round(plateau_cost / plain_cost, 4),
                **late_break_profile(tr),
                "stop_plateau_and_stop_far": per_tau,
                "replay_check": check,
                "seconds": round(time.perf_counter() - t0, 1),
            }
            rows.append(row)
            taus = "  ".join(
                f"tau {t}: {v['cost_vs_plain']:.3f} lost {v['breaks_lost']}"
                for t, v in per_tau.items()
            )
            print(
                f"{spec:<20} robust {row['robust_plain']}/{row['clean_correct']}  "
                f"late-breaking runs {row['late_breaking_runs']} of {row['runs_breaking']}, "
                f"closest at w1 {row['their_closest_at_w1']}; points broken only late "
                f"{row['points_broken_only_late']}\n    stop_plateau "
                f"{row['stop_plateau_vs_plain']:.3f} of plain;  + stop_far {taus}"
                + (f"\n    replay check {check}" if check else ""),
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
