"""Run a study end to end: train (or reuse) its models, run its evaluations and analyses,
judge its claims, and write ``findings.json``, ``FINDINGS.md`` and ``report.html``.

Every step is an ``evalkit`` command line (or ``python -m analysis.pooling``), run in-process
and recorded verbatim in FINDINGS.md, so anyone can rerun a single step by hand. Completed steps
are skipped and interrupted ones resumed, so rerunning the study after a kill continues it.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

from analysis.studies.catalog import SCALES, STUDIES
from analysis.studies.spec import Finding, Scale, Study, StudyContext
from evalkit.errors import EvalkitError
from evalkit.utils.io import atomic_write_json, atomic_write_text


def get_study(name: str) -> Study:
    if name not in STUDIES:
        raise EvalkitError(f"unknown study {name!r} (known: {', '.join(STUDIES)}, or all)")
    return STUDIES[name]


def scale_for(
    name: str, *, dataset: str | None = None, eps: str | None = None, epochs: int | None = None
) -> Scale:
    if name not in SCALES:
        raise EvalkitError(f"unknown --scale {name!r} (use cpu or gpu)")
    s = SCALES[name]
    changes = {
        k: v for k, v in {"dataset": dataset, "eps": eps, "epochs": epochs}.items() if v is not None
    }
    if changes:
        from dataclasses import replace

        s = replace(s, **changes)
    return s


def _command_text(argv: list[str]) -> str:
    if argv[0] == "python":
        return shlex.join(["python", "-m", argv[1], *argv[2:]])
    return shlex.join(["evalkit", *argv])


def _record_time(path: Path, command: str, seconds: float) -> None:
    """Step wall times, shared by the studies under one output root (models are trained once
    and reused), so a study can report the compute its full set of commands costs."""
    times = json.loads(path.read_text()) if path.exists() else {}
    times[command] = round(seconds, 1)
    atomic_write_json(path, times)


def _artifact_time(argv: list[str]) -> float | None:
    """A step's wall time as its own outputs recorded it (training history, run cost), for
    steps run before their time was logged; None when the outputs do not say."""
    try:
        out = Path(argv[argv.index("--out") + 1])
        if argv[0] == "train":
            hist = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)[
                "history"
            ]
            return float(sum(r["time_s"] for r in hist))
        if argv[0] == "attack":
            return float(json.loads((out / "summary.json").read_text())["cost"]["wall_time_s"])
    except (OSError, KeyError, ValueError, RuntimeError):
        return None
    return None


def _run(argv: list[str], log: list[str]) -> None:
    """Run one step in-process; a failure stops the study with the failing command named."""
    if argv[0] == "python":
        module, args = argv[1], argv[2:]
        log.append(shlex.join(["python", "-m", module, *args]))
        code = importlib.import_module(module).main(args)
    else:
        from evalkit.cli import main

        log.append(shlex.join(["evalkit", *argv]))
        code = main(argv)
    if code:
        raise EvalkitError(f"study step failed (exit {code}): {log[-1]}")


def _train_argv(ctx: StudyContext, key: str, defense: str, extra: tuple[str, ...]) -> list[str]:
    s = ctx.scale
    return [
        "train",
        "--dataset",
        s.dataset,
        "--arch",
        s.arch,
        "--defense",
        defense,
        "--epochs",
        str(s.epochs),
        "--eps",
        s.eps,
        *s.train_args,
        *(a.replace("{models}", str(ctx.models_dir)) for a in extra),
        "--seed",
        str(ctx.seed),
        "--device",
        ctx.device,
        "--out",
        str(ctx.ckpt(key).parent),
    ]


def _train_step(
    ctx: StudyContext, key: str, defense: str, extra: tuple[str, ...]
) -> list[str] | None:
    """The train command, ``--resume`` when partly done, or None when the checkpoint is complete."""
    argv = _train_argv(ctx, key, defense, extra)
    ckpt = ctx.ckpt(key)
    if ckpt.exists():
        done = torch.load(ckpt, map_location="cpu", weights_only=True).get("epoch") or 0
        if done >= ctx.scale.epochs:
            return None
        argv.append("--resume")
    return argv


def _attack_done(argv: list[str]) -> list[str] | None:
    out = Path(argv[argv.index("--out") + 1])
    if (out / "summary.json").exists():
        return None
    return argv + ["--resume"] if out.exists() else argv


def _analysis_done(argv: list[str]) -> list[str] | None:
    out = Path(argv[argv.index("--out") + 1])
    return None if (out / "analysis.json").exists() else argv


def findings_markdown(
    study: Study,
    ctx: StudyContext,
    findings: list[Finding],
    commands: list[str],
    meta: dict[str, Any],
) -> str:
    lines = [
        f"# Study `{study.name}`: {study.title}",
        "",
        f"Paper: {study.paper}",
        "",
        f"Scale: **{ctx.scale.name}** — {ctx.scale.notes}. Dataset `{ctx.scale.dataset}`, arch "
        f"`{ctx.scale.arch}`, eps {ctx.scale.eps}, evaluation preset `{ctx.scale.preset}`, seed {ctx.seed}.",
        "",
        f"Regenerate: `{meta['command']}` ("
        + (
            f"its {meta['steps_total']} steps took {meta['compute_time_s'] / 60:.1f} min of wall time here "
            f"({meta['steps_timed']} of them timed; on a shared, loaded machine) on {meta['device']}"
            if meta["steps_timed"]
            else "its steps ran before step timing was recorded"
        )
        + ").",
        "",
        "| claim | verdict | numbers |",
        "|---|---|---|",
    ]
    for f in findings:
        nums = ", ".join(f"{k}={v}" for k, v in f.numbers.items() if not isinstance(v, dict))
        lines.append(f"| {f.claim} | **{f.verdict}** | {nums} |")
    lines += ["", "How each verdict was computed:", ""]
    lines += [f"- *{f.claim}*: {f.explanation}" for f in findings]
    lines += [
        "",
        "Commands run (in order; completed steps are skipped on a rerun):",
        "",
        "```bash",
        *commands,
        "```",
        "",
    ]
    return "\n".join(lines)


def run_study(
    name: str,
    scale: Scale,
    out: str | Path,
    *,
    device: str = "auto",
    seed: int = 0,
    models_dir: str | Path | None = None,
    publish: str | Path | None = None,
    command: str | None = None,
) -> list[Finding]:
    """Run ``name`` at ``scale`` under ``out``; optionally copy the results to ``publish``."""
    study = get_study(name)
    out = Path(out) / name
    ctx = StudyContext(
        out=out,
        models_dir=Path(models_dir) if models_dir else Path(out).parent / "models",
        scale=scale,
        device=device,
        seed=seed,
    )
    t0 = time.perf_counter()
    log: list[str] = []
    steps: list[list[str] | None] = [
        _train_step(ctx, m.key, m.defense, m.train_args) for m in study.models(scale)
    ]
    steps += [_attack_done(a) for a in study.evaluations(ctx)]
    steps += [_analysis_done(a) for a in study.analyses(ctx)]
    todo = [s for s in steps if s is not None]
    print(f"study {name} ({scale.name}): {len(todo)} of {len(steps)} steps to run", file=sys.stderr)
    times_file = ctx.out.parent / "step_times.json"
    for i, argv in enumerate(todo, 1):
        print(f"[{name} {i}/{len(todo)}] evalkit {' '.join(argv[:2])} ...", file=sys.stderr)
        t_step = time.perf_counter()
        _run(argv, log)
        _record_time(
            times_file,
            _command_text([a for a in argv if a != "--resume"]),
            time.perf_counter() - t_step,
        )
    all_commands = [
        _command_text(a)
        for a in (
            [_train_argv(ctx, m.key, m.defense, m.train_args) for m in study.models(scale)]
            + study.evaluations(ctx)
            + study.analyses(ctx)
        )
    ]
    recorded = json.loads(times_file.read_text()) if times_file.exists() else {}
    step_argvs = (
        [_train_argv(ctx, m.key, m.defense, m.train_args) for m in study.models(scale)]
        + study.evaluations(ctx)
        + study.analyses(ctx)
    )
    step_seconds = [recorded.get(c, _artifact_time(a)) for c, a in zip(all_commands, step_argvs)]
    findings = study.judge(ctx)
    meta = {
        "study": name,
        "scale": scale.name,
        "scale_config": scale.__dict__,
        "seed": seed,
        "device": str(device),
        "wall_time_s": time.perf_counter() - t0,
        "compute_time_s": sum(t for t in step_seconds if t is not None),
        "steps_timed": sum(t is not None for t in step_seconds),
        "steps_total": len(all_commands),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command or f"evalkit study {name} --scale {scale.name}",
    }
    atomic_write_json(
        out / "findings.json",
        meta | {"findings": [f.to_dict() for f in findings], "commands": all_commands},
    )
    atomic_write_text(
        out / "FINDINGS.md", findings_markdown(study, ctx, findings, all_commands, meta)
    )
    _report(study, ctx, findings)
    for f in findings:
        print(f"  {f.verdict:>15}: {f.claim}", file=sys.stderr)
    if publish:
        _publish(out, Path(publish) / name / scale.name, Path(out).parent)
        write_index(Path(publish))
    return findings


def _report(study: Study, ctx: StudyContext, findings: list[Finding]) -> None:
    from reports import build_report

    runs = sorted(p.parent for p in (ctx.out / "runs").glob("*/summary.json"))
    analyses = sorted(p.parent for p in (ctx.out / "analysis").glob("*/analysis.json"))
    build_report(
        runs,
        ctx.out / "report.html",
        analysis_dirs=analyses,
        title=f"evalkit study {study.name} ({ctx.scale.name}): {study.title}",
        findings=[f.to_dict() for f in findings],
    )


def _publish(src: Path, dst: Path, out_root: Path | None = None) -> None:
    """Copy the reviewable results (report, findings) — not checkpoints or raw arrays. Paths
    under ``out_root`` are shown relative to the default ``runs/studies``, where the
    regenerate command (``evalkit study NAME``) writes them."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("report.html", "FINDINGS.md", "findings.json"):
        if (src / name).exists():
            text = (src / name).read_text()
            if out_root is not None and name != "report.html":
                text = text.replace(str(out_root.resolve()), "runs/studies").replace(
                    str(out_root), "runs/studies"
                )
            atomic_write_text(dst / name, text)
    print(f"published {src} -> {dst}", file=sys.stderr)


def write_index(root: Path) -> None:
    """``root/README.md``: every published study's verdicts in one table, from its findings.json."""
    lines = [
        "# Reproduction studies",
        "",
        "Each seed-paper finding run end to end by `evalkit study NAME --scale SCALE`; the verdicts are",
        "computed from the measured numbers by `analysis/studies/judges.py`, whose docstring lists the rules",
        "revised after a first look at these CPU results.",
        "Open a study's `report.html` for the tables and plots, `FINDINGS.md` for the commands.",
        "",
        "| study | scale | claim | verdict | regenerate |",
        "|---|---|---|---|---|",
    ]
    for path in sorted(root.glob("*/*/findings.json")):
        rec = json.loads(path.read_text())
        rel = path.parent.relative_to(root)
        for i, f in enumerate(rec["findings"]):
            first = f"[{rec['study']}]({rel}/FINDINGS.md)" if i == 0 else ""
            cmd = f"`{rec['command']}`" if i == 0 else ""
            lines.append(
                f"| {first} | {rec['scale'] if i == 0 else ''} | {f['claim']} | **{f['verdict']}** | {cmd} |"
            )
    if not list(root.glob("*/gpu/findings.json")):
        lines += [
            "",
            "No `gpu`-scale results yet: no GPU was available when these were made. The configs are ready",
            "(ResNet-18 on the full Fashion-MNIST, 15 epochs, default protocol with AutoAttack standard):",
            "`evalkit study all --scale gpu --device cuda --publish docs/studies`.",
        ]
    atomic_write_text(root / "README.md", "\n".join(lines) + "\n")


def list_studies() -> str:
    rows = [f"{s.name:<10} {s.title}  [{s.paper}]" for s in STUDIES.values()]
    return "\n".join(rows)


__all__ = ["get_study", "list_studies", "run_study", "scale_for"]
