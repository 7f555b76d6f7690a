"""aa-fast against pyautoattack on several models: propagations and the robust points.

For each model, on the same test points and one counting hook on the model
(:class:`evalkit.evaluation.units.CostCounter`), runs

(b) pyautoattack ``custom`` [apgd-ce, apgd-t] with the standard version's settings (1 restart,
    9 targets, 100 iterations), the baseline a user would pick for an APGD-only evaluation;
(c+) evalkit's ``aa-fast`` preset (:func:`evalkit.attacks.apgd.apgd_ce_t` with the preset's
    options, i.e. its stopping rules ``stop_plateau`` and ``stop_far``);
(a) pyautoattack ``standard`` (with ``--standard``; FAB-T and Square 5000 make it slow on a CPU),

and prints robust accuracy, fwd+bwd propagations, the ratio (c+)/(b) (target <= 0.5) and
(c+)/(a), and the points on which the two disagree (robust for one, broken by the other).

Models (trained here on the bundled Fashion-MNIST subset unless ``--ckpt LABEL=PATH`` names
one): ``smallcnn`` (width 16) and ``resnet18`` (width 16: the ResNet-18 layout, four stages of
two BasicBlocks with BatchNorm, at a quarter of the channels so a CPU can run it), each
standard-trained and PGD-AT-trained (eps 0.1, 5-step PGD), ``--epochs`` epochs.

A model label may end in ``-s<seed>`` (training seed) and ``--offset`` picks other test
points, for a check on models and points the stopping rules were not calibrated on.

The label ``aa-example`` is a model no one here trained: pyautoattack's example CIFAR-10
ResNet-18 (full width, ``examples/model_test.pt``, shipped in the pyautoattack wheel), at
``--foreign-eps`` (default 1/255, where a part of its points stay robust). CIFAR-10 cannot be
downloaded here, so its inputs are made from the bundled test images (:func:`cifar_shaped`)
and labelled by the model's own clean prediction: every point starts correct, which is all a
comparison of propagations and robust points needs; its accuracies are not CIFAR-10's.

    python bench/aa_fast_models.py [--n 300] [--offset 0] [--eps 0.1] [--epochs 3] [--standard]
        [--models smallcnn-std,smallcnn-at,resnet18-std,resnet18-at] [--json PATH]
    python bench/aa_fast_models.py --models aa-example --n 100 [--foreign-eps 1/255]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from autoattack_cost import measure, pyautoattack_run  # noqa: E402

import evalkit  # noqa: E402
from evalkit.attacks.mode import attack_mode  # noqa: E402
from evalkit.checkpoint import load_model  # noqa: E402
from evalkit.data import load_split  # noqa: E402
from evalkit.errors import EvalkitError  # noqa: E402
from evalkit.utils.device import resolve_device  # noqa: E402
from evalkit.utils.parse import parse_eps  # noqa: E402

MODELS = {
    "smallcnn-std": ("smallcnn", "standard"),
    "smallcnn-at": ("smallcnn", "at"),
    "resnet18-std": ("resnet18", "standard"),
    "resnet18-at": ("resnet18", "at"),
}
FOREIGN = "aa-example"


def aa_example_checkpoint() -> str:
    """Path of pyautoattack's example CIFAR-10 ResNet-18 state_dict (in its wheel)."""
    import pyautoattack

    path = Path(pyautoattack.__file__).parent / "examples" / "model_test.pt"
    if not path.exists():
        raise SystemExit(f"{FOREIGN}: {path} is missing; reinstall pyautoattack (pip)")
    return str(path)


def cifar_shaped(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, 28, 28) grey images in [0, 1] -> (N, 3, 32, 32): zero-padded by 2 pixels, the
    grey value repeated over RGB; made data for a CIFAR-10 model when CIFAR-10 is not here."""
    return F.pad(x, (2, 2, 2, 2)).repeat(1, 3, 1, 1)


def split_label(label: str) -> tuple[str, str | None]:
    """``("smallcnn-at", "2")`` from ``smallcnn-at-s2``; the seed is None without ``-s<seed>``."""
    match = re.fullmatch(r"(.+?)(?:-s(\d+))?", label)
    return match.group(1), match.group(2)


def train_model(label: str, tmp: str, epochs: int, eps: float, device: str) -> str:
    """Trains ``label`` (a key of ``MODELS``, optionally with ``-s<seed>``: training seed,
    default 0) into ``tmp/label``; returns the checkpoint's path."""
    base, seed = split_label(label)
    arch, defense = MODELS[base]
    t0 = time.perf_counter()
    path = evalkit.train(
        dataset="fashion-mnist-mini",
        arch=arch,
        defense=defense,
        epochs=epochs,
        eps=eps,
        attack_steps=5,
        width=16,
        out=f"{tmp}/{label}",
        progress=False,
        device=device,
        seed=int(seed or 0),
    )
    print(f"trained {label} in {time.perf_counter() - t0:.0f}s", flush=True)
    return str(path)


def _held(model, x_adv, y) -> torch.Tensor:
    with torch.no_grad():
        return model(x_adv).argmax(1) == y


def aa_fast(model, x, y, eps: float, seed: int) -> torch.Tensor:
    """The ``aa-fast`` preset's attack with the preset's own options (its stopping rules)."""
    from evalkit.attacks.apgd import apgd_ce_t
    from evalkit.evaluation.protocol import PRESETS

    options = dict(PRESETS["aa-fast"].attacks[0].options)
    return apgd_ce_t(model, x, y, eps=eps, generator=torch.Generator().manual_seed(seed), **options)


def compare(model, x, y, eps: float, seed: int, standard: bool):
    """Clean accuracy, per-run results (robust, fwd, bwd, seconds) and per-point held masks."""
    advs: dict[str, torch.Tensor] = {}

    def run(key: str, fn) -> dict:
        def keep():
            advs[key] = fn()
            return advs[key]

        return measure(model, x, y, eps, keep)

    with attack_mode(model):
        with torch.no_grad():
            clean = float((model(x).argmax(1) == y).float().mean())
        res = {
            "custom": run("custom", lambda: pyautoattack_run(model, x, y, eps, True, 100, seed)),
            "aa-fast": run("aa-fast", lambda: aa_fast(model, x, y, eps, seed)),
        }
        if standard:
            res["standard"] = run(
                "standard", lambda: pyautoattack_run(model, x, y, eps, False, 100, seed)
            )
        held = {k: _held(model, v, y) for k, v in advs.items()}
    return clean, res, held


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--offset", type=int, default=0, help="test points from this index on")
    ap.add_argument("--eps", default="0.1")
    ap.add_argument("--foreign-eps", default="1/255", help=f"eps for {FOREIGN}")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--ckpt", action="append", default=[], metavar="LABEL=PATH")
    ap.add_argument("--standard", action="store_true", help="also pyautoattack standard")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", default=None)
    ap.add_argument(
        "--save",
        default=None,
        help="train into this folder (kept) instead of a temp; a checkpoint already there under "
        "the same label is reused as is, whatever --epochs/--eps were",
    )
    args = ap.parse_args()
    device = resolve_device(args.device)
    try:
        eps = parse_eps(args.eps)
        foreign_eps = parse_eps(args.foreign_eps)
    except EvalkitError as err:
        ap.error(f"--eps/--foreign-eps: {err}")
    if any("=" not in item for item in args.ckpt):
        ap.error("--ckpt takes LABEL=PATH, e.g. --ckpt smallcnn-at=runs/at/checkpoint.pt")
    given = dict(item.split("=", 1) for item in args.ckpt)
    if FOREIGN in given:
        ap.error(f"--ckpt: {FOREIGN} is pyautoattack's own checkpoint; give other labels")
    labels = [m.strip() for m in args.models.split(",") if m.strip()]
    known = [*MODELS, FOREIGN]
    for label in labels:
        if label not in given and split_label(label)[0] not in MODELS and label != FOREIGN:
            ap.error(f"--models: unknown model {label!r}; choose from {', '.join(known)}")
    if args.n <= 0 or args.epochs <= 0:
        ap.error("--n and --epochs must be positive integers")
    test = load_split("fashion-mnist-mini", "test")
    if not 0 <= args.offset < len(test) or args.offset + args.n > len(test):
        ap.error(
            f"--offset + --n must be within the split's {len(test)} points "
            f"(got {args.offset} + {args.n})"
        )
    data = test.subset(slice(args.offset, args.offset + args.n))
    x = data.float_batch(torch.arange(len(data))).to(device)
    y = torch.as_tensor(data.y).to(device)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.save or scratch
        for label in labels:
            if label == FOREIGN:
                model, _ = load_model(
                    aa_example_checkpoint(), arch="resnet18", dataset="cifar10", device=device
                )
                x_m, eps_m = cifar_shaped(x), foreign_eps
                with attack_mode(model), torch.no_grad():
                    y_m = model(x_m).argmax(1)  # made data: the model's own labels
            else:
                saved = Path(tmp) / label / "checkpoint.pt"
                ckpt = given.get(label) or (
                    str(saved)
                    if args.save and saved.exists()
                    else train_model(label, tmp, args.epochs, eps, str(device))
                )
                model, _ = load_model(ckpt, device=device)
                x_m, y_m, eps_m = x, y, eps
            clean, res, held = compare(model, x_m, y_m, eps_m, args.seed, args.standard)
            props = {k: r["fwd"] + r["bwd"] for k, r in res.items()}
            row = {
                "model": label,
                "n": len(x),
                "eps": eps_m,
                "clean": clean,
                "robust": {k: r["robust"] for k, r in res.items()},
                "propagations": props,
                "seconds": {k: round(r["seconds"], 1) for k, r in res.items()},
                "ratio_vs_custom": props["aa-fast"] / props["custom"],
                "only_aa_fast_robust": int((held["aa-fast"] & ~held["custom"]).sum()),
                "only_custom_robust": int((held["custom"] & ~held["aa-fast"]).sum()),
            }
            if "standard" in props:
                row["ratio_vs_standard"] = props["aa-fast"] / props["standard"]
                row["only_aa_fast_robust_vs_standard"] = int(
                    (held["aa-fast"] & ~held["standard"]).sum()
                )
            rows.append(row)
            extra = f"  vs standard {row['ratio_vs_standard']:.3f}" if "standard" in props else ""
            print(
                f"{label:<13} clean {clean:.3f}  robust custom {res['custom']['robust']:.3f} "
                f"aa-fast {res['aa-fast']['robust']:.3f}  fwd+bwd custom {props['custom']:,} "
                f"aa-fast {props['aa-fast']:,}  ratio {row['ratio_vs_custom']:.3f}{extra}  "
                f"disagree: robust only under aa-fast {row['only_aa_fast_robust']}, only "
                f"under custom {row['only_custom_robust']}",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
