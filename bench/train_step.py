"""PGD-AT training-step cost as a ratio to its floor, measured in one run.

A PGD-AT step with k attack steps cannot cost less than (k + 1) forward+backward passes
(k to craft, one to train). This prints the measured step time, the fwd+bwd time of the same
model and batch, and their ratio. Crafting needs only input gradients (no weight gradients) in
eval-mode BN, so the step can beat that floor; the tight floor k*(fwd+input-bwd) + (fwd+bwd)
is printed too.

    python bench/train_step.py [--arch resnet18] [--batch-size 128] [--steps 10] [--device auto]
"""

from __future__ import annotations

import argparse
import time

import torch

from evalkit.models import build_model
from evalkit.training.objectives import ObjectiveContext, pgd_at_loss
from evalkit.utils.device import resolve_device


def _time(fn, repeats: int, device: torch.device) -> float:
    """Least-disturbed time of ``fn``: the minimum over rounds (other load can only add time),
    CPU time of this process on a CPU (steadier on a shared machine), wall time on CUDA."""
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = clock()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(clock() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = build_model(args.arch, num_classes=10, in_channels=3).to(device).train()
    x = torch.rand(args.batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    ctx = ObjectiveContext("at", eps=8 / 255, steps=args.steps, step_size=2 / 255, beta=0.0)
    gen = torch.Generator().manual_seed(0)

    def fwd_bwd() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()

    def input_fwd_bwd() -> None:  # what one attack step needs: eval-mode BN, input gradient only
        model.eval()
        xs = x.clone().requires_grad_(True)
        torch.autograd.grad(torch.nn.functional.cross_entropy(model(xs), y), xs)
        model.train()

    def at_step() -> None:
        loss, _ = pgd_at_loss(model, model, x, y, ctx, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t_fb = _time(fwd_bwd, args.repeats, device)
    t_in = _time(input_fwd_bwd, args.repeats, device)
    t_step = _time(at_step, args.repeats, device)
    floor = (args.steps + 1) * t_fb
    tight = args.steps * t_in + t_fb
    print(
        f"device={device} arch={args.arch} batch={args.batch_size} k={args.steps} torch={torch.__version__}"
    )
    print(f"fwd+bwd (train mode)        {t_fb * 1e3:9.1f} ms")
    print(f"PGD-AT step                 {t_step * 1e3:9.1f} ms")
    print(f"floor (k+1)*(fwd+bwd)       {floor * 1e3:9.1f} ms")
    print(f"ratio step / floor          {t_step / floor:9.3f}")
    print(f"fwd+input-bwd (eval mode)   {t_in * 1e3:9.1f} ms")
    print(f"tight floor k*(fwd+input-bwd) + (fwd+bwd) {tight * 1e3:9.1f} ms")
    print(f"ratio step / tight floor    {t_step / tight:9.3f}")


if __name__ == "__main__":
    main()
