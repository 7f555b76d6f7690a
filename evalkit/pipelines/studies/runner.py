"""Run a study: train its models for every seed, run its evaluations and analyses, judge its
claims, and write ``findings.json``, ``FINDINGS.md`` and ``report.html``.

Every step is a Python call (:class:`~evalkit.pipelines.studies.steps.Step`). Its *identity*
is the sha256 of its function name, its full keyword arguments (JSON), the sha256 of every
input (the bytes of each input file — checkpoints, data files — and the contents of each named
dataset split) and the sha256 of the code that computes it (evalkit's and ``analysis``'s Python
sources less the study orchestration and judges,
:func:`~evalkit.evaluation.fingerprint.source_sha256`): a result from other code is never reused
as current, while a judge edited after a run re-judges the same measurements. A step is reused only when the record it left (``<out>.step.json``, beside its
output folder) holds the same identity, says it finished, and its output files still have the
bytes it recorded; otherwise it is recomputed from an empty folder (an interrupted training or
evaluation with the same identity is resumed). So a retrained checkpoint — new bytes — makes
every step that read it run again, and ``fresh=True`` reruns everything once per runner.
Steps that read checkpoints refuse an unfinished training run. Wall times are measured per
step; a reused step reports the time recorded when it was computed, labelled as such.
FINDINGS.md lists each step as the equivalent ``evalkit`` command line, for humans.
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit import __version__
from evalkit.errors import EvalkitError
from evalkit.pipelines.studies.catalog import SCALES, STUDIES
from evalkit.pipelines.studies.spec import Finding, ModelDef, Scale, Study, StudyContext
from evalkit.pipelines.studies.steps import DataRef, Step
from evalkit.utils.io import atomic_write_json, atomic_write_text

RECORD_SUFFIX = ".step.json"
MIN_PUBLISHED_SEEDS = 3  # training-based claims are published with at least this many seeds


SESSION_FILE = ".fresh-session.json"


def fresh_session(out: str | Path, command: str) -> str:
    """The id of the fresh run ``command`` writes under ``out``: a new one, or the id of the
    same command's run that was interrupted (its file is still there), so that running the
    command again continues it instead of starting over. :func:`end_session` closes it."""
    import uuid

    path = Path(out) / SESSION_FILE
    try:
        doc = json.loads(path.read_text())
        if doc.get("command") == command and doc.get("id"):
            print(
                f"continuing the fresh run started {doc.get('started')} (delete {path} to start over)",
                file=sys.stderr,
            )
            return str(doc["id"])
    except (OSError, ValueError):
        pass
    sid = uuid.uuid4().hex
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"id": sid, "command": command, "started": _now()})
    return sid


def end_session(out: str | Path) -> None:
    """Close the fresh run under ``out``: a later ``--fresh`` recomputes everything again."""
    (Path(out) / SESSION_FILE).unlink(missing_ok=True)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def record_path(out: str | Path) -> Path:
    """Where the record of the step writing ``out`` lives (beside the folder, not inside it:
    run directories must start empty)."""
    out = Path(out)
    return out.parent / f"{out.name}{RECORD_SUFFIX}"


def read_record(out: str | Path) -> dict[str, Any] | None:
    path = record_path(out)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass
class StepOutcome:
    """What happened to one step in this run.

    ``status``: ``computed``, ``resumed`` (an interrupted run continued) or ``reused``;
    ``wall_time_s``: measured when it was computed (for ``reused``, then, not now);
    ``computed_at``: when its results were computed.
    """

    step: Step
    identity: str
    status: str
    wall_time_s: float | None
    computed_at: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "fn": self.step.fn,
            "kwargs": dict(self.step.kwargs),
            "command": self.step.command(),
            "identity": self.identity,
            "status": self.status,
            "wall_time_s": self.wall_time_s,
            "computed_at": self.computed_at,
        }

    def time_text(self) -> str:
        t = "?" if self.wall_time_s is None else f"{self.wall_time_s:.1f} s"
        if self.status == "reused":
            return f"reused; took {t} when computed ({self.computed_at})"
        return f"{self.status} in {t}"


class StepRunner:
    """Runs steps with content-keyed reuse; one instance per ``evalkit study`` invocation, so
    ``fresh=True`` recomputes each step once even when several studies share it."""

    def __init__(
        self,
        *,
        fresh: bool = False,
        progress: bool = False,
        say: Callable[[str], None] | None = None,
        code_sha: str | None = None,
        session: str | None = None,
    ) -> None:
        from evalkit.evaluation.fingerprint import source_sha256

        self.fresh = fresh
        # a fresh run interrupted and started again continues: steps it computed (or left
        # running) under the same session id count as fresh (see fresh_session)
        self.session = session if fresh else None
        self.code_sha = code_sha or source_sha256()
        self.progress = progress
        self.say = say or (lambda text: print(text, file=sys.stderr, flush=True))
        self.computed: set[str] = set()  # identities computed by this runner
        self._file_sha: dict[tuple[str, int, int], str] = {}
        self._data_sha: dict[str, str] = {}
        self._complete: set[tuple[str, str]] = set()

    def _same_session(self, rec: dict[str, Any] | None) -> bool:
        return bool(self.session and rec and rec.get("fresh_session") == self.session)

    # ---------------------------------------------------------------- fingerprints

    def file_sha(self, path: str | Path) -> str:
        """sha256 of a file's bytes (cached by path, size and modification time)."""
        from evalkit.evaluation.fingerprint import file_sha256

        p = Path(path)
        try:
            st = p.stat()
        except OSError:
            raise EvalkitError(
                f"study input {p} does not exist (did the step that writes it fail?)"
            ) from None
        key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
        if key not in self._file_sha:
            self._file_sha[key] = file_sha256(p)
        return self._file_sha[key]

    def data_sha(self, ref: DataRef) -> str:
        """sha256 of a dataset split's images and labels (loaded once per runner)."""
        if ref.key() not in self._data_sha:
            from evalkit.data import load_split
            from evalkit.evaluation.fingerprint import tensors_sha256

            split = load_split(ref.dataset, ref.split, root=ref.root)
            self._data_sha[ref.key()] = tensors_sha256(split.x, split.y)
        return self._data_sha[ref.key()]

    def identity(self, step: Step) -> tuple[str, dict[str, str]]:
        """``(identity, inputs)``: sha256 over the function name, the JSON arguments, the
        sha256 of every input file and dataset split (``inputs``: name -> sha256) and of the
        code (``code_sha``)."""
        import hashlib

        kind = step.kind
        kw = dict(step.kwargs)
        inputs = {f"file:{f}": self.file_sha(f) for f in kind.files(kw)}
        inputs |= {f"data:{r.key()}": self.data_sha(r) for r in kind.data(kw)}
        doc = {"fn": step.fn, "kwargs": kw, "inputs": inputs, "code": self.code_sha}
        try:
            text = json.dumps(doc, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise EvalkitError(
                f"study step {step.fn}: arguments are not plain JSON ({exc})"
            ) from None
        return hashlib.sha256(text.encode()).hexdigest(), inputs

    def _require_complete(self, path: str) -> None:
        from evalkit.training.api import require_complete

        key = (path, self.file_sha(path))
        if key not in self._complete:
            require_complete(path)
            self._complete.add(key)

    # ---------------------------------------------------------------- running

    def _outputs(self, step: Step) -> dict[str, str]:
        out = {}
        for name in step.kind.outputs:
            p = step.out / name
            if p.exists():
                out[name] = self.file_sha(p)
        return out

    def reusable(self, step: Step, identity: str) -> dict[str, Any] | None:
        """The step's finished record when its results may be reused, else None."""
        rec = read_record(step.out)
        if not rec or rec.get("status") != "done" or rec.get("identity") != identity:
            return None
        if self.fresh and identity not in self.computed and not self._same_session(rec):
            return None
        first = step.kind.outputs[0]
        recorded = rec.get("outputs") or {}
        if first not in recorded or self._outputs(step) != recorded:
            return None  # outputs missing or changed since they were recorded
        return rec

    def run(self, step: Step) -> StepOutcome:
        """Reuse or (re)compute ``step``; raises :class:`EvalkitError` for an unfinished input
        checkpoint or a step that fails."""
        kind = step.kind
        kw = dict(step.kwargs)
        for ck in kind.checkpoints(kw):
            self._require_complete(str(ck))
        identity, inputs = self.identity(step)
        rec = self.reusable(step, identity)
        if rec is not None:
            return StepOutcome(
                step, identity, "reused", rec.get("wall_time_s"), rec.get("finished")
            )
        old = read_record(step.out)
        resume = bool(
            kind.resumable
            and (not self.fresh or self._same_session(old))
            and old
            and old.get("status") == "running"
            and old.get("identity") == identity
            and step.out.is_dir()
            and any(step.out.iterdir())
        )
        if not resume and step.out.exists():
            shutil.rmtree(step.out)
        started = _now()
        base = {
            "fn": step.fn,
            "kwargs": kw,
            "inputs": inputs,
            "identity": identity,
            "started": started,
            "evalkit_version": __version__,
            "code_sha256": self.code_sha,
            "fresh_session": self.session,
        }
        atomic_write_json(record_path(step.out), base | {"status": "running"})
        t0 = time.perf_counter()
        try:
            kind.call(progress=self.progress, resume=resume, **kw)
        except EvalkitError:
            if not resume:
                raise
            # the interrupted partial result could not be continued: start it over
            shutil.rmtree(step.out, ignore_errors=True)
            resume = False
            t0 = time.perf_counter()
            kind.call(progress=self.progress, resume=False, **kw)
        wall = time.perf_counter() - t0
        first = step.out / kind.outputs[0]
        if not first.exists():
            raise EvalkitError(f"study step {step.fn} finished without writing {first}")
        finished = _now()
        atomic_write_json(
            record_path(step.out),
            base
            | {
                "status": "done",
                "outputs": self._outputs(step),
                "wall_time_s": wall,
                "finished": finished,
                "resumed": resume,
            },
        )
        self.computed.add(identity)
        return StepOutcome(step, identity, "resumed" if resume else "computed", wall, finished)

    def run_all(self, steps: Iterable[Step], label: str = "") -> list[StepOutcome]:
        steps = list(steps)
        outcomes = []
        for i, step in enumerate(steps, 1):
            self.say(f"[{label} {i}/{len(steps)}] {step.fn} -> {step.out}")
            outcome = self.run(step)
            self.say(f"[{label} {i}/{len(steps)}] {outcome.time_text()}")
            outcomes.append(outcome)
        return outcomes


# ------------------------------------------------------------------------------ planning


def get_study(name: str) -> Study:
    if name not in STUDIES:
        raise EvalkitError(f"unknown study {name!r} (known: {', '.join(STUDIES)}, or all)")
    return STUDIES[name]


def scale_for(
    name: str,
    *,
    dataset: str | None = None,
    eps: str | None = None,
    epochs: int | None = None,
    seeds: Iterable[int] | None = None,
    data_root: str | None = None,
) -> Scale:
    """The catalog's scale ``name`` with optional overrides."""
    if name not in SCALES:
        raise EvalkitError(f"unknown scale {name!r} (use {', '.join(SCALES)})")
    from dataclasses import replace

    s = SCALES[name]
    changes: dict[str, Any] = {
        k: v
        for k, v in {
            "dataset": dataset,
            "eps": eps,
            "epochs": epochs,
            "data_root": data_root,
        }.items()
        if v is not None
    }
    if seeds is not None:
        seeds = tuple(int(v) for v in seeds)
        if not seeds or len(set(seeds)) != len(seeds):
            raise EvalkitError("seeds must be distinct integers, e.g. 0,1,2")
        changes["seeds"] = seeds
    if epochs is not None and epochs < 1:
        raise EvalkitError(f"epochs must be at least 1 (got {epochs})")
    return replace(s, **changes) if changes else s


def train_step(ctx: StudyContext, model: ModelDef, seed: int) -> Step:
    """The :func:`evalkit.training.api.train` call of ``model`` at ``seed`` and ctx's scale."""
    s = ctx.scale
    kw: dict[str, Any] = {
        "dataset": s.dataset,
        "arch": s.arch,
        "defense": model.defense,
        "epochs": s.epochs,
        "eps": s.eps,
        **dict(s.train_options),
        **dict(model.options),
        "seed": seed,
        "device": ctx.device,
        "out": str(ctx.ckpt(model.key, seed).parent),
    }
    if s.data_root:
        kw["data_root"] = s.data_root
    if model.init:
        kw["init"] = str(ctx.ckpt(model.init, seed))
    return Step("train", kw)


def plan(study: Study, ctx: StudyContext) -> list[Step]:
    """Every step of ``study`` in order: all trainings, then per seed its evaluations and
    analyses."""
    models = study.models(ctx.scale)
    steps = [train_step(ctx, m, seed) for seed in ctx.seeds for m in models]
    for seed in ctx.seeds:
        steps += study.evaluations(ctx, seed)
        steps += study.analyses(ctx, seed)
    return steps


# ------------------------------------------------------------------------------ writing


def _interval_text(f: dict[str, Any]) -> str:
    iv = f.get("interval")
    if not iv:
        return ""
    eff = f.get("effect")
    head = f"{eff:+.4f} " if isinstance(eff, (int, float)) else ""
    return f"{head}[{iv[0]:+.4f}, {iv[1]:+.4f}]"


def findings_markdown(
    study: Study,
    ctx: StudyContext,
    findings: list[Finding],
    outcomes: list[StepOutcome],
    meta: dict[str, Any],
) -> str:
    s = ctx.scale
    seeds = ", ".join(str(v) for v in ctx.seeds)
    lines = [
        f"# Study `{study.name}`: {study.title}",
        "",
        f"Paper: {study.paper}",
        "",
        f"Scale: **{s.name}** — {s.notes}. Dataset `{s.dataset}`, arch `{s.arch}`, eps {s.eps}, "
        f"evaluation preset `{s.preset}`, training seeds {seeds}.",
        "",
        f"Regenerate: `{meta['command']}`. Its {meta['steps_total']} steps cost "
        f"{meta['compute_time_s'] / 60:.1f} min of wall time as measured when each was computed "
        f"({meta['steps_computed']} computed in this run, {meta['steps_reused']} reused from "
        f"earlier runs with identical inputs; on {meta['device']}, a shared machine).",
        "",
        "| claim | verdict | effect [interval] | numbers |",
        "|---|---|---|---|",
    ]
    for f in (x.to_dict() for x in findings):
        nums = ", ".join(
            f"{k}={v}" for k, v in f["numbers"].items() if not isinstance(v, (dict, list))
        )
        lines.append(f"| {f['claim']} | **{f['verdict']}** | {_interval_text(f)} | {nums} |")
    lines += ["", "How each verdict was computed:", ""]
    lines += [f"- *{f.claim}*: {f.explanation}" for f in findings]
    if any(f.mechanism for f in findings):
        lines += ["", "Which mechanism holds behind each verdict (measured in these runs):", ""]
        lines += [f"- *{f.claim}*: {f.mechanism}" for f in findings if f.mechanism]
    lines += [
        "",
        "Steps, as equivalent command lines (in order; each is rerun only when its arguments or "
        "the bytes of its inputs or evalkit's code change), with their wall time:",
        "",
        "```bash",
    ]
    for o in outcomes:
        lines += [f"# {o.time_text()}", o.step.command()]
    lines += ["```", ""]
    return "\n".join(lines)


def run_study(
    name: str,
    scale: Scale,
    out: str | Path,
    *,
    device: str = "auto",
    models_dir: str | Path | None = None,
    publish: str | Path | None = None,
    command: str | None = None,
    fresh: bool = False,
    runner: StepRunner | None = None,
    progress: bool = False,
) -> list[Finding]:
    """Run study ``name`` at ``scale`` under ``out/name``; checkpoints go to ``models_dir``
    (default ``out/models``, shared by the studies). ``fresh`` recomputes every step
    (``runner`` shares that across studies). Copies the results to ``publish`` when given."""
    study = get_study(name)
    if publish and len(scale.seeds) < MIN_PUBLISHED_SEEDS:
        raise EvalkitError(
            f"publishing needs at least {MIN_PUBLISHED_SEEDS} training seeds (got "
            f"{len(scale.seeds)}): claims about training are judged across seeds"
        )
    root = Path(out)
    ctx = StudyContext(
        out=root / name,
        models_dir=Path(models_dir) if models_dir else root / "models",
        scale=scale,
        device=device,
        seeds=scale.seeds,
    )
    runner = runner or StepRunner(fresh=fresh, progress=progress)
    t0 = time.perf_counter()
    steps = plan(study, ctx)
    runner.say(f"study {name} ({scale.name}, seeds {list(scale.seeds)}): {len(steps)} steps")
    outcomes = runner.run_all(steps, name)
    findings = study.judge(ctx)
    times = [o.wall_time_s for o in outcomes]
    meta = {
        "study": name,
        "scale": scale.name,
        "scale_config": scale.describe(),
        "seeds": list(scale.seeds),
        "device": _device_text(device),
        "wall_time_s": time.perf_counter() - t0,
        "compute_time_s": sum(t for t in times if t is not None),
        "steps_total": len(outcomes),
        "steps_computed": sum(o.status != "reused" for o in outcomes),
        "steps_reused": sum(o.status == "reused" for o in outcomes),
        "created": _now(),
        "evalkit_version": __version__,
        "command": command or f"evalkit study {name} --scale {scale.name} --fresh",
    }
    atomic_write_json(
        ctx.out / "findings.json",
        meta
        | {
            "findings": [f.to_dict() for f in findings],
            "steps": [o.to_dict() for o in outcomes],
        },
    )
    atomic_write_text(
        ctx.out / "FINDINGS.md", findings_markdown(study, ctx, findings, outcomes, meta)
    )
    _report(study, ctx, findings, outcomes)
    for f in findings:
        runner.say(f"  {f.verdict:>15}: {f.claim}")
    if publish:
        _publish(ctx.out, Path(publish) / name / scale.name, root)
        write_index(Path(publish))
    return findings


def _device_text(device: str) -> str:
    """The device the steps ran on, resolved (``auto`` -> ``cpu``/``cuda``)."""
    from evalkit.utils.device import resolve_device

    try:
        return str(resolve_device(device))
    except EvalkitError:
        return str(device)


def _report(
    study: Study, ctx: StudyContext, findings: list[Finding], outcomes: list[StepOutcome]
) -> None:
    from evalkit.reporting import report

    runs = [o.step.out for o in outcomes if o.step.fn == "evaluate"]
    analyses = [o.step.out for o in outcomes if o.step.fn == "analyze"]
    report(
        runs,
        analyses=analyses,
        out=ctx.out / "report.html",
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
        "Each seed-paper finding run end to end by `evalkit study NAME --scale SCALE --fresh`;",
        "the verdicts are computed from the measured numbers by `analysis/studies/judges.py` (rules",
        "in its docstring and `analysis/studies/stats.py`), with the effect's interval and the",
        "training seeds. Open a study's `report.html` for the tables and plots, `FINDINGS.md` for",
        "the steps and their measured wall time.",
        "",
    ]
    lines += verdict_table(root)
    lines += _unpublished_lines(root)
    lines += ["", "Scales (every model is trained with each of the training seeds):", ""]
    lines += [f"- `{s.name}`: {s.notes}." for s in SCALES.values()]
    lines += [
        "",
        "A step (training, evaluation, analysis) is reused only when its arguments, the sha256 "
        "of its inputs (checkpoints, data) and the sha256 of evalkit's code are unchanged; "
        "`--fresh` recomputes everything. Each study's `FINDINGS.md` lists its steps as command "
        "lines with their measured wall time.",
    ]
    atomic_write_text(root / "README.md", "\n".join(lines) + "\n")


def verdict_table(root: Path, link_prefix: str = "") -> list[str]:
    """Markdown table of every published verdict under ``root`` (``*/*/findings.json``): study,
    scale, training seeds, claim, verdict, effect with its interval, regenerate command. Links
    to each FINDINGS.md are prefixed with ``link_prefix`` (the README links into
    ``docs/studies/``)."""
    lines = [
        "| study | scale | seeds | claim | verdict | effect [interval] | regenerate |",
        "|---|---|---|---|---|---|---|",
    ]
    withheld = False
    for path in sorted(root.glob("*/*/findings.json")):
        rec = json.loads(path.read_text())
        rel = path.parent.relative_to(root).as_posix()
        seeds = ",".join(str(s) for s in rec.get("seeds", []))
        for i, f in enumerate(rec["findings"]):
            first = f"[{rec['study']}]({link_prefix}{rel}/FINDINGS.md)" if i == 0 else ""
            cmd = f"`{rec['command']}`" if i == 0 else ""
            scale = rec["scale"] if i == 0 else ""
            mark = ""
            iv = f.get("interval")
            if f["verdict"] == "inconclusive" and iv and (iv[0] > 0 or iv[1] < 0):
                mark, withheld = " †", True
            lines.append(
                f"| {first} | {scale} | {seeds if i == 0 else ''} | {f['claim']} | "
                f"**{f['verdict']}**{mark} | {_interval_text(f)} | {cmd} |"
            )
    if withheld:
        lines += [
            "",
            "† The interval excludes 0, but a rule of the claim withholds the verdict: a "
            "saturated measure (every model's channels nearly all active), or a second part of "
            "the claim that is not shown (e.g. SAP's residual above the dense model is not "
            "below the 5-point margin). The study's FINDINGS.md says which.",
        ]
    return lines


# why a scale may be missing from the index; the costs are the catalog's measured ones
SCALE_NEEDS = {
    "medium": "about 4.7 h of training on 2 CPU cores for the channel and cas-cifs studies' "
    "models alone (5 models x 3 seeds x 4 epochs; PGD-AT about 7 min per epoch on the full "
    "split, measured by `python bench/study_cost.py --scale medium`, "
    "`bench/results/study_cost_medium.json`), more than one sitting of the machine these were "
    "made on",
    "gpu": "a CUDA device",
}
SCALE_ARGS = {"gpu": " --device cuda"}


def _unpublished_lines(root: Path) -> list[str]:
    """The (study, scale) pairs of the catalog with no findings under ``root``: what a reader
    must not assume was measured, with the command that would measure it."""
    missing: dict[str, list[str]] = {}
    for study in STUDIES.values():
        for scale in study.scales:
            if not (root / study.name / scale / "findings.json").exists():
                missing.setdefault(scale, []).append(study.name)
    if not missing:
        return []
    lines = [
        "",
        "Not published (nothing was measured at these scales, so no verdict holds there):",
        "",
    ]
    for scale, names in missing.items():
        need = SCALE_NEEDS.get(scale, "")
        lines.append(
            f"- `{scale}`: {', '.join(names)}" + (f" — needs {need}" if need else "") + "; run "
            f"`evalkit study NAME --scale {scale}{SCALE_ARGS.get(scale, '')} --fresh --publish "
            f"{root.as_posix()}`."
        )
    return lines


def list_studies() -> str:
    rows = [f"{s.name:<10} {s.title}  [{s.paper}]" for s in STUDIES.values()]
    return "\n".join(rows)


__all__ = [
    "StepOutcome",
    "StepRunner",
    "get_study",
    "list_studies",
    "plan",
    "read_record",
    "record_path",
    "run_study",
    "scale_for",
    "train_step",
    "verdict_table",
    "write_index",
]
