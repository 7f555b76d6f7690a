"""The training loop: objective + defense plugins, per-epoch validation, atomic checkpoints,
exact resume and optional DDP.

Randomness is derived from ``(seed, epoch)`` (data order, augmentation, attack starts, dropout),
so ``--resume`` after any completed epoch reproduces an uninterrupted run exactly without
pickling RNG objects into the checkpoint.
"""

from __future__ import annotations

import csv
import io
import math
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from evalkit.attacks.losses import make_loss
from evalkit.attacks.mode import attack_mode
from evalkit.attacks.pgd import pgd
from evalkit.checkpoint import read_checkpoint_file, read_meta, save_checkpoint
from evalkit.data import ArraySplit, dataset_info, iterate_batches, load_split
from evalkit.defenses import apply_defenses, extra_losses, has_aux_heads, parse_spec, plugin_params
from evalkit.defenses.aux_loss import head_beta
from evalkit.defenses.inspect import readouts
from evalkit.defenses.registry import get_plugin, margin_transforms
from evalkit.errors import EvalkitError
from evalkit.models import build_model
from evalkit.training.config import TrainConfig
from evalkit.training.health import Tally, TrainingHealthWarning
from evalkit.training.health import judge as judge_health
from evalkit.training.health import metrics as health_metrics
from evalkit.training.objectives import OBJECTIVES, ObjectiveContext
from evalkit.training.schedule import make_optimizer, make_scheduler
from evalkit.utils.device import resolve_device
from evalkit.utils.distributed import all_reduce_sum, barrier, device_for, setup
from evalkit.utils.io import atomic_write_text
from evalkit.utils.seeding import derive_seed, make_generator, seed_everything

HISTORY_FIELDS = [
    "epoch",
    "lr",
    "train_loss",
    "train_acc",
    "val_clean_acc",
    "val_pgd_acc",
    "time_s",
]


def split_train_val(data: ArraySplit, cfg: TrainConfig) -> tuple[ArraySplit, ArraySplit]:
    """Hold out the last ``val_size`` examples (never the test set: no selection on test)."""
    if cfg.n_train is not None:
        data = data.first(cfg.n_train + cfg.val_size)
    n_val = min(cfg.val_size, max(0, len(data) // 5))
    if n_val == 0:
        return data, data.first(0)
    return data.subset(slice(0, len(data) - n_val)), data.subset(
        slice(len(data) - n_val, len(data))
    )


def build_training_model(cfg: TrainConfig) -> tuple[nn.Module, dict[str, Any]]:
    """Architecture + defense plugins; returns the model and the effective defense params."""
    info = dataset_info(cfg.dataset)
    spec = parse_spec(cfg.defense, cfg.defense_params)
    for name in spec.plugins:
        if get_plugin(name).test_time_only:
            raise EvalkitError(
                f"{name} is a test-time defense: train without it and evaluate with --defense {name}"
            )
    mean, std = (info.mean, info.std) if cfg.normalize else (None, None)
    model = build_model(
        cfg.arch,
        num_classes=info.num_classes,
        in_channels=info.in_channels,
        mean=mean,
        std=std,
        **cfg.arch_kwargs,
    )
    model = apply_defenses(model, spec)
    return model, plugin_params(spec)


def validate(
    model: nn.Module,
    val: ArraySplit,
    cfg: TrainConfig,
    device: torch.device,
    epoch: int,
    head_beta: float = 2.0,
) -> tuple[float, float, Tally | None]:
    """Clean and PGD accuracy on the held-out split (eval mode, joint loss for aux heads), and
    for plug-in models (CAS/CIFS readouts) the per-example outcomes the health checks need."""
    if len(val) == 0:
        return float("nan"), float("nan"), None
    loss = make_loss("ce", joint=has_aux_heads(model), beta=head_beta)
    gen = make_generator(derive_seed(cfg.seed, "val", epoch))
    clean = robust = 0
    tally: Tally | None = None
    with attack_mode(model):
        for _, x, y in iterate_batches(val, 256):
            x, y = x.to(device), y.to(device)
            with torch.no_grad():
                logits = model(x)
            clean_reads = readouts(model)
            clean += int((logits.argmax(1) == y).sum())
            x_adv = pgd(
                model,
                x,
                y,
                cfg.eps,
                steps=cfg.val_attack_steps,
                step_size=cfg.eps / 4,
                loss=loss,
                generator=gen,
            )
            with torch.no_grad():
                adv_logits = model(x_adv)
            robust += int((adv_logits.argmax(1) == y).sum())
            if clean_reads:
                tally = tally or Tally()
                tally.add_clean(logits, y, clean_reads)
                tally.add_adversarial(adv_logits, y, clean_reads, readouts(model))
    return clean / len(val), robust / len(val), tally


def _history_csv(history: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    extra = [k for row in history for k in row if k not in HISTORY_FIELDS]
    fields = HISTORY_FIELDS + list(dict.fromkeys(extra))  # health columns of plug-in models
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


def _resume_state(cfg: TrainConfig, out: Path) -> dict[str, Any] | None:
    ckpt = out / "checkpoint.pt"
    if not ckpt.exists():
        if cfg.resume:
            raise EvalkitError(f"--resume: no checkpoint.pt in {out} (start without --resume)")
        return None
    if not cfg.resume:
        raise EvalkitError(
            f"{out} already holds a checkpoint.pt (add --resume to continue it, or pick another --out)"
        )
    obj = read_checkpoint_file(ckpt)
    meta = read_meta(obj, ckpt)
    saved = meta.train_config
    for key in ("dataset", "arch", "defense", "seed", "batch_size", "eps"):
        if key in saved and saved[key] != getattr(cfg, key):
            raise EvalkitError(
                f"--resume: {key} was {saved[key]!r} in {ckpt}, now {getattr(cfg, key)!r} (use the same options)"
            )
    if "extra" not in obj:
        raise EvalkitError(
            f"--resume: {ckpt} has no optimizer state (it was not written by evalkit train)"
        )
    return obj


def _warm_start(model: nn.Module, path: str, min_val_acc: float | None = None) -> None:
    """Start from another checkpoint's weights (not its optimizer): the CIFS paper adversarially
    trains from a naturally trained CIFS model. Arch and defense must match. With
    ``min_val_acc`` the start must have converged: its last epoch's validation clean accuracy
    reaches it and its training health (plug-ins) did not fail."""
    obj = read_checkpoint_file(path)
    state = obj.get("state_dict") if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise EvalkitError(f"--init {path} holds no state_dict")
    if min_val_acc is not None:
        _check_converged(obj, path, min_val_acc)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise EvalkitError(
            f"--init {path} does not fit this model ({str(exc).splitlines()[0][:160]})"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        keys = (result.missing_keys or result.unexpected_keys)[:2]
        raise EvalkitError(
            f"--init {path} does not fit this arch/defense (mismatched keys such as {keys})"
        )


def _check_converged(obj: dict[str, Any], path: str, min_val_acc: float) -> None:
    """The warm-start gate: a natural pre-training that did not converge makes AT+CIFS start
    from a model whose output is weaker than its probes, which then never recovers."""
    history = list(obj.get("history") or [])
    acc = history[-1].get("val_clean_acc") if history else None
    if acc is None or acc != acc:
        raise EvalkitError(
            f"--init {path} records no validation accuracy to check against "
            f"--init-min-val-acc {min_val_acc:g} (train it with --val-size > 0)"
        )
    if acc < min_val_acc:
        raise EvalkitError(
            f"--init {path} reached validation clean accuracy {acc:.3f} < {min_val_acc:g}: "
            "train the warm start longer (more --epochs) or lower --init-min-val-acc"
        )
    health = obj.get("health") or {}
    if health.get("status") == "failed":
        raise EvalkitError(
            f"--init {path} failed its training-health checks ("
            + "; ".join(health.get("reasons") or [])[:200]
            + "): fix its training first"
        )


def _warn_health(health: dict[str, Any], epoch: int, epochs: int, is_main: bool) -> None:
    """Say it when a plug-in defense looks like it is defeating itself (see
    :mod:`evalkit.training.health`), as a :class:`TrainingHealthWarning` callers can filter or
    turn into an error."""
    if health["status"] == "ok" or not is_main:
        return
    text = f"training health at epoch {epoch}/{epochs}: {health['status']}: " + "; ".join(
        health["reasons"]
    )
    warnings.warn(text, TrainingHealthWarning, stacklevel=3)


def train(cfg: TrainConfig) -> Path:
    """Train per ``cfg``; returns the path of ``checkpoint.pt`` (rank 0 writes it every epoch,
    with ``train_config["completed"]`` True only after the last one)."""
    device = resolve_device(cfg.device)
    dist = setup(device)
    device = device_for(device, dist)
    out = Path(cfg.out)
    spec = parse_spec(cfg.defense, cfg.defense_params)
    seed_everything(cfg.seed)
    model, params = build_training_model(cfg)
    info = dataset_info(cfg.dataset)
    resume = _resume_state(cfg, out)
    barrier(dist)
    augment = info.augment if cfg.augment is None else cfg.augment
    train_split, val_split = split_train_val(
        load_split(cfg.dataset, "train", cfg.data_root, cfg.download), cfg
    )
    if len(train_split) == 0:
        raise EvalkitError("no training examples (check --n-train)")

    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, cfg)
    history: list[dict[str, Any]] = []
    start_epoch = 1
    if cfg.init and resume is None:
        _warm_start(model, cfg.init, cfg.init_min_val_acc)
    if resume is not None:
        model.load_state_dict(resume["state_dict"])
        opt.load_state_dict(resume["extra"]["optimizer"])
        sched.load_state_dict(resume["extra"]["scheduler"])
        history = list(resume.get("history") or [])
        start_epoch = int(resume.get("epoch") or 0) + 1

    train_model: nn.Module = model
    if dist.active:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    use_bf16 = cfg.amp == "bf16"
    if cfg.amp not in ("none", "bf16"):
        raise EvalkitError(f"unknown --amp {cfg.amp!r} (use none or bf16)")
    ctx = ObjectiveContext(
        objective=spec.objective,
        eps=cfg.eps,
        steps=cfg.attack_steps,
        step_size=cfg.attack_step(),
        beta=cfg.objective_beta(spec.objective),
        attack_bn=cfg.attack_bn,
        margin_fns=margin_transforms(spec),
        extra_fns=extra_losses(spec),
        params=params,
        autocast=(lambda: torch.autocast(device.type, dtype=torch.bfloat16))
        if use_bf16
        else nullcontext,
    )
    objective = OBJECTIVES[spec.objective]
    beta_heads = head_beta(params)
    # CAS-style modules mask features with the true label in training, so accuracy on training
    # logits would be inflated (near 100%): it is not recorded for them; validation is honest.
    label_conditioned = any(getattr(m, "uses_labels", False) for m in model.modules())
    train_config = cfg.to_dict() | {
        "defense_spec": str(spec),
        "objective_beta": ctx.beta,
        "attack_step_size": ctx.step_size,
        "world_size": dist.world_size,
        "n_train_used": len(train_split),
        "n_val": len(val_split),
    }
    local_batch = max(1, cfg.batch_size // dist.world_size)
    health: dict[str, Any] | None = resume.get("health") if resume is not None else None
    for epoch in range(start_epoch, cfg.epochs + 1):
        t0 = time.perf_counter()
        torch.manual_seed(derive_seed(cfg.seed, "epoch", epoch))  # dropout etc.
        gen = make_generator(derive_seed(cfg.seed, "data", epoch))
        order = torch.randperm(len(train_split), generator=gen)
        shard = order[dist.rank :: dist.world_size] if dist.active else order
        atk_gen = make_generator(derive_seed(cfg.seed, "attack", epoch, dist.rank))
        model.train()
        tot_loss = tot_correct = tot_n = 0.0
        batches = iterate_batches(
            train_split, local_batch, augment=augment, generator=gen, indices=shard
        )
        bar = tqdm(
            batches,
            total=math.ceil(len(shard) / local_batch),
            desc=f"epoch {epoch}/{cfg.epochs}",
            disable=not (cfg.progress and dist.is_main),
            leave=False,
            dynamic_ncols=True,
        )
        for _, x, y in bar:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            loss, logits = objective(train_model, model, x, y, ctx, atk_gen)
            if not torch.isfinite(loss):
                raise EvalkitError(
                    f"training diverged at epoch {epoch} (loss {loss.item()}); lower --lr"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n = y.shape[0]
            tot_loss += float(loss.detach()) * n
            tot_correct += float((logits.detach().argmax(1) == y).sum())
            tot_n += n
            bar.set_postfix(
                loss=f"{tot_loss / tot_n:.3f}",
                acc="n/a" if label_conditioned else f"{tot_correct / tot_n:.3f}",
            )
        bar.close()
        tot_loss, tot_correct, tot_n = all_reduce_sum([tot_loss, tot_correct, tot_n], dist, device)
        lr = opt.param_groups[0]["lr"]
        sched.step()
        val_clean, val_pgd, tally = validate(model, val_split, cfg, device, epoch, beta_heads)
        train_acc = float("nan") if label_conditioned else tot_correct / tot_n
        row = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": tot_loss / tot_n,
            "train_acc": train_acc,
            "val_clean_acc": val_clean,
            "val_pgd_acc": val_pgd,
            "time_s": time.perf_counter() - t0,
        }
        if tally is not None:
            before = (health or {}).get("status")
            health = judge_health(tally) | {"epoch": epoch}
            row.update(health_metrics(tally), health=health["status"])
            if health["status"] != before or epoch == cfg.epochs:  # changes and the verdict
                _warn_health(health, epoch, cfg.epochs, dist.is_main)
        history.append(row)
        if dist.is_main:
            save_checkpoint(
                out / "checkpoint.pt",
                model,
                dataset=cfg.dataset,
                input_size=info.input_size,
                defense=str(spec),
                defense_params=params,
                # the last epoch's checkpoint says so: studies refuse one still training
                train_config=train_config | {"completed": epoch == cfg.epochs},
                history=history,
                epoch=epoch,
                health=health,
                extra={"optimizer": opt.state_dict(), "scheduler": sched.state_dict()},
            )
            atomic_write_text(out / "history.csv", _history_csv(history))
            if cfg.progress:
                tqdm.write(
                    f"epoch {epoch}/{cfg.epochs}  loss {row['train_loss']:.4f}  train acc {train_acc:.3f}"
                    f"  val clean {val_clean:.3f}  val PGD-{cfg.val_attack_steps} {val_pgd:.3f}"
                    f"  ({row['time_s']:.1f}s)"
                )
        barrier(dist)
    if start_epoch > cfg.epochs and dist.is_main and cfg.progress:
        tqdm.write(f"{out / 'checkpoint.pt'} already has {cfg.epochs} epochs; nothing to do")
    return out / "checkpoint.pt"
