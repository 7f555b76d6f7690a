"""``evalkit.evaluate``: the whole robustness protocol on any PyTorch model, from Python.

>>> import evalkit
>>> result = evalkit.evaluate(model, (x, y), eps="8/255", preset="fast", out="runs/eval")
>>> result.robust_accuracy, result.summary["flags"]

Around the engine (:mod:`evalkit.evaluation.engine`, which only sees a model and tensors) this
module does the edges: it loads or adopts the model and data, learns the model's traits
(auxiliary heads, randomness, bounded logits, gradient-computed masks), makes the protocol
adaptive to them, binds the run directory to content hashes, runs the checks within their
budget, and writes ``config.json``, ``summary.json`` and ``examples.parquet`` (formats:
docs/run-directory.md). The protocol itself is described in docs/protocol.md.
"""

from __future__ import annotations

import io
import json
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn as nn

from evalkit import __version__
from evalkit.attacks.eot import is_model_random
from evalkit.attacks.mode import attack_mode
from evalkit.defenses.context import (
    has_aux_heads,
    has_bounded_logits,
    has_mask_gradients,
    has_non_differentiable,
    is_stochastic,
    non_differentiable_steps,
)
from evalkit.errors import EvalkitError
from evalkit.evaluation import adversarial as ADV
from evalkit.evaluation import curve as C
from evalkit.evaluation import distributed as D
from evalkit.evaluation import sanity as S
from evalkit.evaluation.accounting import PassMeter, complete_cost
from evalkit.evaluation.budget import Budget, check_norm, check_positive_int, parse_budgets
from evalkit.evaluation.diagnostics import masking_flags, run_diagnostics, summarize_diagnostics
from evalkit.evaluation.diagnostics import wanted as wants_diagnostics
from evalkit.evaluation.engine import Forecast, Settings, n_batches, run_protocol
from evalkit.evaluation.estimate import estimate, plan_cost, probe_rate
from evalkit.evaluation.gradients import require_gradients
from evalkit.evaluation.inputs import (
    DataInput,
    ModelInput,
    check_match,
    check_shape,
    count_classes,
    fingerprints,
    resolve_data,
    resolve_model,
)
from evalkit.evaluation.memory import fit_batch_size
from evalkit.evaluation.protocol import (
    AttackPlan,
    ModelTraits,
    Preset,
    adapt_plans,
    get_preset,
    select_attacks,
)
from evalkit.evaluation.rundir import RecordLog, prepare_run_dir
from evalkit.evaluation.source import ModelSource
from evalkit.evaluation.summary import format_table, json_safe, per_example_table, summarize
from evalkit.evaluation.units import CostCounter
from evalkit.models.precision import accelerate, check_precision
from evalkit.utils.device import resolve_device
from evalkit.utils.io import atomic_write_bytes, atomic_write_json
from evalkit.utils.seeding import derive_seed

SCHEMA_VERSION = 2
LOSSES = ("ce", "cw", "dlr")


@dataclass
class EvalResult:
    """What :func:`evaluate` returns (and writes to ``run_dir`` when one was given)."""

    summary: dict[str, Any]
    examples: pd.DataFrame
    run_dir: Path | None = None
    fingerprints: dict[str, Any] = field(default_factory=dict)
    #: with ``save_adversarial``: per eps label the worst-case images and where they came from
    #: (arrays ``x``, ``y``, ``index``, ``attack``, ``score``, ...; docs/run-directory.md)
    adversarial: dict[str, dict[str, Any]] | None = None

    @property
    def clean_accuracy(self) -> float:
        """Clean accuracy (Monte-Carlo mean over draws for randomized models)."""
        return float(self.summary["clean_accuracy"])

    @property
    def robust_accuracy(self) -> float:
        """Worst-case robust accuracy at the first eps."""
        return float(self.summary["worst_case"][0]["robust_accuracy"])

    @property
    def clean_accuracy_ci(self) -> tuple[float, float]:
        """95% interval ``(low, high)`` of the clean accuracy (docs/protocol.md, Intervals)."""
        low, high = self.summary["clean_accuracy_ci"]
        return float(low), float(high)

    @property
    def robust_accuracy_ci(self) -> tuple[float, float]:
        """95% interval ``(low, high)`` of the worst-case robust accuracy at the first eps."""
        low, high = self.summary["worst_case"][0]["robust_accuracy_ci"]
        return float(low), float(high)

    @property
    def diagnostics(self) -> dict[str, Any] | None:
        """The masking diagnostics of a plug-in model (plain vs adaptive attacks run on their
        own, heads vs output; :mod:`evalkit.evaluation.diagnostics`), None when none ran."""
        return self.summary.get("diagnostics")

    def __repr__(self) -> str:
        return format_table(self.summary)


ADAPTABLE = ("aux_heads", "stochastic", "bounded_logits", "mask_gradients", "non_differentiable")


def _check_adapt_for(adapt_for: dict[str, bool] | None) -> dict[str, bool]:
    unknown = sorted(set(adapt_for or {}) - set(ADAPTABLE))
    if unknown:
        raise EvalkitError(
            f"adapt_for has unknown traits {', '.join(unknown)} (known: {', '.join(ADAPTABLE)})"
        )
    return {k: bool(v) for k, v in (adapt_for or {}).items()}


def union_traits(models: list[nn.Module]) -> dict[str, bool]:
    """The traits any of ``models`` has, for ``evaluate(..., adapt_for=...)``: models compared
    with each other then face the union of the adaptive attacks any of them needs."""
    return {
        "aux_heads": any(has_aux_heads(m) for m in models),
        "stochastic": any(is_stochastic(m) for m in models),
        "bounded_logits": any(has_bounded_logits(m) for m in models),
        "mask_gradients": any(has_mask_gradients(m) for m in models),
        "non_differentiable": any(has_non_differentiable(m) for m in models),
    }


def _as_list(v: list[str] | str | None) -> list[str] | None:
    if v is None:
        return None
    if isinstance(v, str):
        return [t.strip() for t in v.split(",") if t.strip()]
    return [str(t) for t in v]


def _traits(model: nn.Module, x: torch.Tensor, num_classes: int, params: dict, seed: int):
    beta = float(params.get("cas_beta", params.get("cifs_beta", params.get("beta", 2.0))))
    torch.manual_seed(derive_seed(seed, "random-probe"))
    with attack_mode(model):
        random = bool(is_model_random(model, x))
    return ModelTraits(
        aux_heads=has_aux_heads(model),
        stochastic=is_stochastic(model),
        random_detected=random,
        bounded_logits=has_bounded_logits(model),
        mask_gradients=has_mask_gradients(model),
        non_differentiable=has_non_differentiable(model),
        bpda_steps=tuple(non_differentiable_steps(model)),
        beta=beta,
        num_classes=num_classes,
    )


def _protocol_text(
    preset: str,
    plans: list[AttackPlan],
    budgets: list[Budget],
    n: int,
    compaction: bool,
    draws: int,
    curve: AttackPlan | None = None,
) -> str:
    lines = [
        f"evaluation protocol (preset {preset}): {n} examples, norm {budgets[0].norm}, eps "
        f"{', '.join(b.label for b in budgets)}, "
        + (
            "compaction on (each attack gets only the points still robust; per-attack numbers "
            "are cumulative)"
            if compaction
            else "no compaction (independent per-attack numbers)"
        )
        + (f"; Monte-Carlo scoring over {draws} draws" if draws > 1 else "")
    ]
    lines += [f"  {i}. {p.line()}" for i, p in enumerate(plans, 1)]
    if curve is not None:
        lines.append(f"  +  {curve.line()}")
    return "\n".join(lines)


def _environment(device: torch.device, info: D.DistInfo) -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "evalkit": __version__,
        "python": platform.python_version(),
        "device": str(device),
        "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "world_size": info.world_size,
    }


def evaluate(
    model: nn.Module | str | Path,
    data: Any = None,
    *,
    eps: str | float | list[str | float] | None = None,
    norm: str | None = None,
    preset: str = "default",
    attacks: list[str] | str | None = None,
    n: int | None = None,
    batch_size: int = 128,
    seed: int = 0,
    device: str | torch.device = "auto",
    mc_draws: int = 20,
    eot: int | None = None,
    loss: str | None = None,
    compaction: bool = True,
    sanity: bool = True,
    diagnostics: bool | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    echo: bool = True,
    data_root: str | Path | None = None,
    download: bool = False,
    adapt_for: dict[str, bool] | None = None,
    save_adversarial: bool = False,
    curve: bool = False,
    curve_steps: int = C.CURVE_STEPS,
    shattered: str = "error",
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool | str = False,
    source: ModelSource | None = None,
    **source_options: Any,
) -> EvalResult:
    """Evaluate ``model``'s robustness on ``data`` under a protocol; returns an :class:`EvalResult`.

    Args:
        model: any ``nn.Module`` mapping images ``(N, C, H, W)`` in [0, 1] to logits
            ``(N, classes)`` (use :func:`evalkit.wrap` for own preprocessing or non-tensor
            outputs), or a path/spec string (evalkit checkpoint, state_dict + ``arch``,
            TorchScript, ``pkg.module:factory``, ...).
        data: ``(x, y)`` tensors (x uint8 0-255 or float 0-1), a DataLoader, a ``.npz``/``.pt``
            path, a dataset name (test split), or None for the checkpoint's dataset.
        eps: budget(s) in pixel units, e.g. ``"8/255"``, ``0.5`` or ``["4/255", "8/255"]``;
            default: the preset's for Linf, 0.5 for L2. Range: (0, 1] for Linf, (0, sqrt(CHW)]
            for L2.
        norm: ``linf`` (default) or ``l2``.
        preset: ``default``, ``fast``, ``aa-fast``, ``pgd``, ``study-cpu``, ``paper-*``.
        attacks: explicit list replacing the preset's attacks; they are made adaptive in place
            and adaptive additions the model needs are reported as left out.
        n: evaluate the first ``n`` examples. batch_size: examples per unit of work.
        mc_draws: forward passes per candidate for randomized models (Monte-Carlo scoring).
        eot: EOT samples per gradient (default 20 for randomized models, 1 otherwise).
        loss: override the loss of every gradient attack except CW (``ce``, ``cw``, ``dlr``).
        compaction: attack only points still robust (AutoAttack-style waterfall).
        sanity: run the checks (within 25% of the attack cost).
        diagnostics: run the masking diagnostics (plain vs adaptive PGD, independently on the
            same points, and the heads' agreement and selection flips;
            :mod:`evalkit.evaluation.diagnostics`); None (default): for models whose own
            traits call for them (auxiliary heads, CIFS masks, bounded logits).
        out: run directory (None: in memory). resume: continue ``out`` after a kill; refused
            when the model, data, protocol or versions changed.
        data_root, download: where torchvision data sets live, and whether to fetch them.
        source: how to load a model given by path or spec (:class:`ModelSource`), or its
            fields as keywords (``**source_options``, checked by name with a did-you-mean):

            - ``weights``: weights file for a ``pkg.module:factory`` / ``file.py:factory`` model;
            - ``arch``, ``dataset``: a plain state_dict's architecture and data set (``dataset``
              also names the default test data);
            - ``normalize`` (``"MEAN,STD"``, ``"M1,M2,M3;S1,S2,S3"`` or ``(mean, std)``) and
              ``force_normalize``: a foreign model's input normalization, and replacing the one
              an evalkit checkpoint records;
            - ``output``: how to read a loaded model's logits: ``auto``, ``first``
              (tuple/list), ``key:NAME`` (dict) or ``log`` (probabilities; their log is used).
              For an ``nn.Module`` use :func:`evalkit.wrap` instead;
            - ``defense``, ``params``: test-time defense to add (e.g. ``sap``) and defense
              parameters (e.g. ``{"cifs_adaptive": True}``);
            - ``model_dir``: RobustBench's model folder for ``robustbench:DATASET/THREAT/NAME``
              models (default ``./models``);
            - ``weights_set``: ``"ema"`` or ``"raw"``: which weights of a checkpoint holding
              both (raw and EMA copies); such a checkpoint is refused without it. Recorded in
              config.json.

            Keywords override the fields of ``source``.
        save_adversarial: also keep the worst-case adversarial image of every example, with
            the attack that made it: ``result.adversarial`` (eps label -> arrays) and, with
            ``out``, ``out/adversarial/<eps>.npz`` (format: docs/run-directory.md; the file
            loads back as ``data=``).
        adapt_for: traits to adapt to in addition to the model's own, e.g.
            ``{"bounded_logits": True, "aux_heads": True}``: a comparison of several models
            passes the union of their traits (:func:`union_traits`) so every model faces the
            same attacks. Keys: ``aux_heads``, ``stochastic``, ``bounded_logits``,
            ``mask_gradients``, ``non_differentiable``.
        curve: also run the minimum-norm attack FMN (Pintor et al. 2021) once on every
            clean-correct point: summary.json ``curve`` holds robust accuracy at every eps up
            to the largest budget, the report draws it, and flags mark budgets where it and the
            fixed-eps attacks disagree (:mod:`evalkit.evaluation.curve`). ``curve_steps``:
            its iterations (default 100).

        shattered: ``error`` (default) or ``run``. Shattered gradients (missing, or zero or NaN
            for a quarter of the probe points, e.g. a numpy or rounding step) are diagnosed
            before any attack (:mod:`evalkit.evaluation.gradients`): an :class:`EvalkitError`
            naming the fix (declare the step with :func:`evalkit.bpda` or a defense part);
            a model that declares its steps gets BPDA versions of its gradient attacks instead.
            ``run`` lets zero/NaN gradients through (the sanity checks flag them, the Square
            probe counts what the blind attacks missed); a missing gradient is always refused.
        precision, channels_last, compile: speed opt-ins (:mod:`evalkit.models.precision`):
            ``bf16``/``fp16`` autocast with fp32 inputs, perturbations and logits; channels-last
            memory; ``torch.compile`` (``True`` or a backend name). Recorded in config.json
            (a resume must match). The shattered-gradient check runs on the accelerated model,
            so a precision that underflows the gradient is refused before any attack.

    Raises:
        EvalkitError: one line naming the fix, for every bad input.

    Follows AutoAttack's protocol ideas (Croce & Hein, ICML 2020) and Athalye et al. (ICML
    2018) for randomized defenses (EOT) and shattered gradients (BPDA).
    """
    t_start = time.perf_counter()
    chosen = get_preset(preset)
    names = _as_list(attacks)
    norm = check_norm(norm, chosen.norm)
    if loss is not None and loss not in LOSSES:
        raise EvalkitError(f"loss must be ce, cw or dlr, not {loss!r}")
    if resume and out is None:
        raise EvalkitError("resume needs out= (the run directory to continue)")
    model_source = ModelSource.from_options(source_options, base=source)
    if shattered not in ("error", "run"):
        raise EvalkitError(f"shattered must be 'error' or 'run', not {shattered!r}")
    req = Request(
        eps=eps,
        norm=norm,
        preset=chosen,
        plans=select_attacks(chosen, names, norm),
        explicit=bool(names),
        n=None if n is None else check_positive_int("n", n),
        settings=Settings(
            batch_size=check_positive_int("batch_size", batch_size),
            seed=check_positive_int("seed", seed, minimum=0),
            compaction=compaction,
            progress=progress,
        ),
        mc_draws=check_positive_int("mc_draws", mc_draws),
        eot=None if eot is None else check_positive_int("eot", eot),
        loss=loss,
        sanity=sanity,
        diagnostics=diagnostics,
        out=Path(out) if out is not None else None,
        resume=resume,
        echo=echo,
        source=model_source,
        data_opts=dict(data_root=data_root, download=download),
        adapt_for=_check_adapt_for(adapt_for),
        t_start=t_start,
        save_adversarial=bool(save_adversarial),
        curve_steps=check_positive_int("curve_steps", curve_steps) if curve else None,
        shattered=shattered,
        acceleration={
            "precision": check_precision(precision),
            "channels_last": bool(channels_last),
            "compile": compile if isinstance(compile, str) else bool(compile),
        },
    )
    dev = resolve_device(device)
    info = D.setup(dev)
    try:
        return _run(model, data, req, D.device_for(dev, info), info)
    finally:
        D.teardown(info)


@dataclass(frozen=True)
class Request:
    """The validated options of one :func:`evaluate` call (nothing loaded yet)."""

    eps: Any
    norm: str
    preset: Preset
    plans: list[AttackPlan]
    explicit: bool
    n: int | None
    settings: Settings
    mc_draws: int
    eot: int | None
    loss: str | None
    sanity: bool
    diagnostics: bool | None
    out: Path | None
    resume: bool
    echo: bool
    source: ModelSource
    data_opts: dict[str, Any]
    adapt_for: dict[str, bool]
    t_start: float
    save_adversarial: bool = False
    curve_steps: int | None = None  # None: no robustness curve
    shattered: str = "error"  # or "run": zero/NaN input gradients let through
    # evalkit.models.precision.accelerate options: precision, channels_last, compile
    acceleration: dict[str, Any] = field(default_factory=dict)

    @property
    def protocol_name(self) -> str:
        """``custom`` for an explicit attack list (the preset only supplied definitions)."""
        return "custom" if self.explicit else self.preset.name


@dataclass
class Prepared:
    """Everything known once the model and data are loaded: what will run, on what."""

    model: ModelInput
    data: DataInput
    budgets: list[Budget]
    traits: ModelTraits
    plans: list[AttackPlan]
    adaptive: list[dict[str, Any]]
    settings: Settings
    fingerprints: dict[str, Any]
    probe_x: torch.Tensor
    diagnose: bool = False  # run the masking diagnostics (evalkit.evaluation.diagnostics)
    own_traits: ModelTraits | None = None  # the model's own, before adapt_for (diagnostics)
    curve: AttackPlan | None = None
    meter: PassMeter | None = None  # every pass through the model since it was loaded
    notes: list[str] = field(default_factory=list)  # said with the plan (e.g. batch size)

    def config(self, req: Request) -> dict[str, Any]:
        """config.json: the settings and content hashes a resume must match."""
        return {
            **self.fingerprints,
            "model": self.model.description,
            "data": self.data.source,
            "n": len(self.data.examples),
            "batch_size": self.settings.batch_size,
            "eps": [b.label for b in self.budgets],
            "norm": req.norm,
            "seed": self.settings.seed,
            "preset": req.preset.name,
            "plans": [p.describe() for p in self.plans],
            "compaction": self.settings.compaction,
            "mc_draws": self.settings.draws,
            "sanity": req.sanity,
            "diagnostics": self.diagnose,
            "weights_set": req.source.weights_set,
            "curve": self.curve.describe() if self.curve is not None else None,
            # None when nothing is asked for, as in configs written before the option existed
            "acceleration": req.acceleration if _accelerated(req.acceleration) else None,
            "evalkit_version": __version__,
            "torch_version": torch.__version__,
        }


def _accelerated(options: dict[str, Any]) -> bool:
    return options.get("precision", "fp32") != "fp32" or any(
        bool(options.get(k)) for k in ("channels_last", "compile")
    )


def _prepare(
    model: Any, data: Any, req: Request, device: torch.device, info: D.DistInfo
) -> Prepared:
    """Load/adopt model and data, check they fit, learn traits, make the plans adaptive."""
    m = resolve_model(model, req.source, device=device)
    plain = m.model  # fingerprinted: the weights, whatever runs them
    m.model = accelerate(m.model, **req.acceleration)  # every attack and check sees it
    meter = PassMeter.on(m.model)
    try:
        prepared = _prepare_loaded(m, plain, data, req, device, info)
    except BaseException:
        meter.close()
        raise
    prepared.meter = meter
    meter.setup = meter.snapshot()
    return prepared


def _prepare_loaded(
    m: ModelInput,
    plain: nn.Module,
    data: Any,
    req: Request,
    device: torch.device,
    info: D.DistInfo,
) -> Prepared:
    """:func:`_prepare` once the model is loaded (its checks are the run's setup passes)."""
    d = resolve_data(data, dataset=req.source.dataset or m.dataset, n=req.n, **req.data_opts)
    check_shape(m, d)
    probe_x, probe_y = (
        t.to(device) for t in d.examples.fetch(torch.arange(min(16, len(d.examples))))
    )
    num_classes = count_classes(m.model, probe_x)
    if m.num_classes is not None and int(m.num_classes) != num_classes:
        raise EvalkitError(
            f"the model returns {num_classes} logits but its metadata says {m.num_classes} classes"
        )
    check_match(m, d, num_classes)
    budgets = parse_budgets(req.eps, req.norm, preset_eps=req.preset.eps, input_shape=d.shape)
    params = {**m.defense_params, **(req.source.params or {})}
    traits = _traits(m.model, probe_x, num_classes, params, req.settings.seed)
    diagnose = wants_diagnostics(traits) if req.diagnostics is None else bool(req.diagnostics)
    own = traits
    if req.adapt_for:
        traits = replace(traits, **{k: getattr(traits, k) or v for k, v in req.adapt_for.items()})
    plans, adaptive = adapt_plans(
        req.plans, traits, eot=req.eot, loss=req.loss, explicit=req.explicit
    )
    curve = C.curve_plan(req.curve_steps, traits, req.eot) if req.curve_steps else None
    if curve is not None or any(q.white_box for q in plans):
        with attack_mode(m.model), _precision_hint(req.acceleration.get("precision", "fp32")):
            require_gradients(
                m.model,
                probe_x,
                probe_y,
                declared=traits.non_differentiable,
                missing_only=req.shattered == "run",
            )
    settings = replace(req.settings, draws=req.mc_draws if traits.random else 1)
    notes: list[str] = []
    recorded = _recorded_batch_size(req)
    if recorded is not None and recorded < settings.batch_size:
        settings = replace(
            settings, batch_size=recorded
        )  # a resume keeps the size it backed off to
    elif recorded is None and info.world_size == 1 and any(q.white_box for q in plans):
        # under torchrun ranks must agree on the batches, and each would probe its own memory
        with attack_mode(m.model):
            size = fit_batch_size(
                m.model,
                lambda k: d.examples.fetch(torch.arange(min(k, len(d.examples))))[0].to(device),
                min(settings.batch_size, len(d.examples)),
                say=notes.append,
            )
        if size < min(settings.batch_size, len(d.examples)):
            settings = replace(settings, batch_size=size)
    return Prepared(
        m,
        d,
        budgets,
        traits,
        plans,
        adaptive,
        settings,
        fingerprints(replace(m, model=plain), d),
        probe_x,
        diagnose,
        own,
        curve,
        notes=notes,
    )


def _announce(p: Prepared, req: Request, say: Any) -> None:
    """Print the protocol, the adaptive changes and the planned cost before running."""
    n = len(p.data.examples)
    say(
        _protocol_text(
            req.protocol_name,
            p.plans,
            p.budgets,
            n,
            p.settings.compaction,
            p.settings.draws,
            p.curve,
        )
    )
    for note in p.notes:
        say(note)
    for a in p.adaptive:
        ran = ", ".join(a["attacks"]) or "none"
        extra = f"; left out: {', '.join(a['left_out'])}" if a.get("left_out") else ""
        say(f"  adaptive: {a['name']} ({a['reason']}) -> {ran}{extra}")
    before = p.meter.snapshot() if p.meter is not None else (0, 0)
    with attack_mode(p.model.model):
        size = min(32, n, p.settings.batch_size)  # within the batch size that fits
        timing_x = p.data.examples.fetch(torch.arange(size))[0].to(p.probe_x.device)
        rate = _rate(p.model.model, timing_x)
    if p.meter is not None:
        after = p.meter.snapshot()
        p.meter.timing = (after[0] - before[0], after[1] - before[1])
    planned = estimate(p.plans, p.budgets, n, p.settings.draws, rate)
    say("  " + planned.line())
    if p.meter is not None:
        p.meter.planned, p.meter.rate = planned.forward + planned.backward, rate
    if p.curve is not None:
        f, b = plan_cost(p.curve, p.settings.draws)
        say(
            f"  curve ({p.curve.id}, once for every eps): at most {n * f:,} forward + "
            f"{n * b:,} backward propagations (~{n * (f + b) * rate / 60:.1f} min) on top"
        )


@contextmanager
def _precision_hint(precision: str) -> Iterator[None]:
    """Name reduced precision in a shattered-gradient refusal: under fp16 (rarely bf16) the
    zeros may be underflow of the evaluator's own making, not the model's."""
    try:
        yield
    except EvalkitError as exc:
        if precision == "fp32":
            raise
        raise EvalkitError(
            f"{exc} (under precision={precision} the zeros may be underflow: evaluate in fp32 "
            "or bf16)"
        ) from None


def _recorded_batch_size(req: Request) -> int | None:
    """The batch size of the run directory being resumed (None: not a resume, or no config)."""
    if not req.resume or req.out is None or not (req.out / "config.json").exists():
        return None
    try:
        return int(json.loads((req.out / "config.json").read_text())["batch_size"])
    except (ValueError, KeyError, TypeError):
        return None


def _forecaster(meter: PassMeter, say: Any) -> Any:
    """The engine's forecast callback: the first forecast made before the last batch is said
    (when ``say`` is given) and kept for summary.json ``cost.estimate``."""

    def take(f: Forecast) -> None:
        if meter.forecast is not None or f.points_done >= f.points:
            return
        # the time at the rate this process has shown so far (small compacted batches run at
        # a lower rate than the timing probe's full one)
        seconds = f.expected_seconds(meter.rate)
        minutes = seconds / 60
        meter.forecast = {
            "expected": f.expected,
            "expected_seconds": seconds,
            "from_points": f.points_done,
            "points": f.points,
        }
        if say is not None:
            say(
                f"  expected cost (from {f.points_done} of the {f.points} points to attack): "
                f"~{f.expected:,} propagations for the clean pass and attacks (~{minutes:.1f} "
                "min at this run's rate so far); the sanity checks add at most a quarter"
            )

    return take


def _rate(model: nn.Module, x: torch.Tensor) -> float:
    """Seconds per propagation from the timed probe; a model without an input gradient (only
    black-box attacks run on it) is timed on forward passes."""
    try:
        return probe_rate(model, x)
    except RuntimeError:
        with torch.no_grad():
            model(x)
            t0 = time.perf_counter()
            model(x)
        return (time.perf_counter() - t0) / max(len(x), 1)


def _open_run_dir(p: Prepared, req: Request, info: D.DistInfo) -> None:
    if req.out is None:
        return
    err = None
    if info.is_main:
        try:
            prepare_run_dir(req.out, p.config(req), resume=req.resume, is_writer=True)
        except EvalkitError as exc:
            err = str(exc)
    err = D.broadcast_object(err, info)
    if err:
        raise EvalkitError(err)


def _run(model: Any, data: Any, req: Request, device: torch.device, info: D.DistInfo):
    def say(text: str) -> None:
        if req.echo and info.is_main:
            print(text, flush=True)

    p = _prepare(model, data, req, device, info)
    assert p.meter is not None
    try:
        return _run_prepared(p, req, device, info, say)
    finally:
        p.meter.close()


def _run_prepared(
    p: Prepared, req: Request, device: torch.device, info: D.DistInfo, say: Any
) -> EvalResult:
    assert p.meter is not None
    if req.save_adversarial:
        ADV.check_resumable(req.out, req.resume)
    _open_run_dir(p, req, info)
    _announce(p, req, say)
    log = RecordLog(req.out, info.rank)
    n = len(p.data.examples)
    owned = [b for b in range(n_batches(n, p.settings.batch_size)) if info.owns(b)]
    counter = p.meter.counter
    p.meter.resumed = frozenset(log.records)
    summary, df, kept = None, pd.DataFrame(), None
    store = None
    if req.save_adversarial:
        store = ADV.CandidateStore(req.out / ADV.FOLDER if req.out is not None else None)
    try:
        with ADV.capture(store), attack_mode(p.model.model):
            run_protocol(
                p.model.model,
                p.data.examples,
                p.plans,
                p.budgets,
                traits=p.traits,
                settings=p.settings,
                device=device,
                counter=counter,
                records=log.records,
                record=log.add,
                batches=owned,
                planned=p.meter.planned,
                forecast=_forecaster(p.meter, say if info.is_main else None),
            )
        records = D.gather_records(dict(log.records), info)
        if info.is_main:
            with ADV.capture(store):
                summary, df = _finish(p, req, records, counter, log.add, device, info)
            summary["cost"] = complete_cost(summary["cost"], records, log.records, p.meter)
            if store is not None:  # every rank wrote its units before gather_records returned
                kept = ADV.assemble(store, df, p.budgets, p.data.examples.fetch)
                if req.out is not None:
                    summary["adversarial"] = ADV.write(req.out / ADV.FOLDER, kept)
    except KeyboardInterrupt as exc:
        if req.out is not None and hasattr(exc, "add_note"):
            exc.add_note(
                f"evalkit: completed units are saved in {req.out}; continue with "
                f"evaluate(..., out={str(req.out)!r}, resume=True)"
            )
        raise
    finally:
        log.close()
    summary = D.broadcast_object(summary, info)
    if req.out is not None and info.is_main:
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        atomic_write_bytes(req.out / "examples.parquet", buf.getvalue())
        atomic_write_json(req.out / "summary.json", summary)
    say(format_table(summary))
    if req.out is not None:
        say(f"run directory: {req.out}")
    return EvalResult(summary, df, req.out, p.fingerprints, kept)


def training_health_flags(health: dict[str, Any] | None) -> list[dict[str, Any]]:
    """A checkpoint whose plug-in defense failed (or warned) its training-health checks says so
    first (:mod:`evalkit.training.health`): its numbers describe a defense defeating itself."""
    if not health or health.get("status") in (None, "ok"):
        return []
    failed = health["status"] == "failed"
    return [
        S.flag(
            "training_failed" if failed else "training_health_warning",
            "error" if failed else "warning",
            f"training health {health['status']} at epoch {health.get('epoch')}: "
            + "; ".join(health.get("reasons") or []),
        )
    ]


def _flags(p: Prepared, numbers: dict[str, Any], checks: list[dict]) -> list[dict[str, Any]]:
    """Every flag of the run, most important first."""
    flags = S.check_ball_violations(numbers) + S.nonfinite_flags(numbers)
    flags += training_health_flags(p.model.description.get("health"))
    flags += masking_flags(numbers.get("diagnostics"))
    flags += S.randomness_flags(p.traits, p.settings.draws) + checks
    if p.model.unfinished:
        flags.insert(
            0,
            S.flag(
                "unfinished_training",
                "warning",
                f"unfinished training run: the checkpoint is at {p.model.unfinished}; its numbers "
                "describe a model still in training",
            ),
        )
    for a in p.adaptive:
        if a.get("left_out"):
            flags.append(
                S.flag(
                    "adaptive_attack_left_out",
                    "warning",
                    f"the model needs {a['name']} ({', '.join(a['left_out'])}) but the explicit "
                    "attack list left it out: the robust accuracy may be overstated",
                )
            )
    return flags


def _finish(
    p: Prepared,
    req: Request,
    records: dict[str, dict[str, Any]],
    counter: CostCounter,
    record: Any,
    device: torch.device,
    info: D.DistInfo,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Checks (their probe records join ``records``), then the summary and examples table."""
    cfg, names, k = p.settings, p.model.class_names, p.traits.num_classes

    def tables(plans: list[AttackPlan]) -> tuple[pd.DataFrame, dict[str, Any]]:
        df = per_example_table(records, plans, p.budgets, cfg.compaction, names)
        numbers = summarize(df, records, plans, p.budgets, cfg.compaction, k, names, cfg.draws)
        numbers["compaction"] = cfg.compaction
        return df, numbers

    df, numbers = tables(p.plans)
    extra: list[AttackPlan] = []
    curve_block: dict[str, Any] | None = None
    checks: list[dict[str, Any]] = []
    if p.curve is not None:
        with attack_mode(p.model.model):
            C.run_curve(
                p.model.model,
                p.data.examples.fetch,
                df,
                p.curve,
                req.norm,
                p.traits,
                seed=cfg.seed,
                draws=cfg.draws,
                batch_size=cfg.batch_size,
                device=device,
                counter=counter,
                records=records,
                record=record,
            )
        C.add_budget_records(records, df, p.curve, p.budgets)
        curve_block, curve_flags, curve_cols = C.summarize_curve(records, df, p.curve, p.budgets)
        checks += curve_flags
        extra = [p.curve]
        df, numbers = tables([*p.plans, *extra])
    probes: list[AttackPlan] = []
    sanity_cost: dict[str, Any] = {"propagations": 0, "share_of_protocol": 0.0, "skipped": True}
    if req.sanity:
        with attack_mode(p.model.model):
            found, probes, sanity_cost = S.run_checks(
                p.model.model,
                p.data.examples.fetch,
                df,
                numbers,
                [*p.plans, *extra],
                p.budgets,
                p.traits,
                seed=cfg.seed,
                draws=cfg.draws,
                device=device,
                counter=counter,
                records=records,
                record=record,
            )
        checks = found + checks
        if probes:
            df, numbers = tables([*p.plans, *extra, *probes])
    diag: list[AttackPlan] = []
    if p.diagnose:
        with attack_mode(p.model.model):
            diag = run_diagnostics(
                p.model.model,
                p.data.examples.fetch,
                df,
                p.plans,
                p.budgets,
                p.own_traits or p.traits,
                seed=cfg.seed,
                draws=cfg.draws,
                batch_size=cfg.batch_size,
                device=device,
                counter=counter,
                records=records,
                record=record,
            )
        if diag:
            df, numbers = tables([*p.plans, *extra, *probes, *diag])
    numbers["diagnostics"] = summarize_diagnostics(df, records, diag, p.budgets)
    if numbers["diagnostics"] is not None:  # their rows live with them; their breaks are in
        rows = numbers["results"]  # the worst case, the protocol's table lists the protocol
        numbers["diagnostics"]["results"] = [r for r in rows if r.get("diagnostic")]
        numbers["results"] = [r for r in rows if not r.get("diagnostic")]
    numbers["cost"]["sanity"] = sanity_cost
    if curve_block is not None:
        numbers["cost"]["curve"] = curve_block["cost"]
        df = df.merge(curve_cols, on="index", how="left")
    numbers["cost"]["wall_time_s"] = time.perf_counter() - req.t_start
    summary: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        **numbers,
        "seed": cfg.seed,
        "flags": _flags(p, numbers, checks),
        "adaptive": p.adaptive,
        **({"curve": curve_block} if curve_block is not None else {}),
        "model": p.model.description,
        "fingerprints": p.fingerprints,
        "traits": asdict(p.traits),
        "data": {"source": p.data.source, "n": len(p.data.examples)},
        "protocol": {
            "preset": req.protocol_name,
            "definitions_from": req.preset.name,
            "description": (
                "explicit attack list: " + "; ".join(q.description for q in p.plans)
                if req.explicit
                else req.preset.description
            ),
            "norm": req.norm,
            "eps": [b.label for b in p.budgets],
            "attacks": [q.describe() for q in p.plans],
            "probes": [q.describe() for q in probes],
            "compaction": cfg.compaction,
            "batch_size": cfg.batch_size,
            "sanity": req.sanity,
            "mc_draws": cfg.draws,
            "robust_accuracy_meaning": (
                "cumulative: mean robust score of all examples after this attack and every "
                "attack before it (AutoAttack-style waterfall)"
                if cfg.compaction
                else "independent: mean robust score against the clean input and this attack"
            ),
        },
        "environment": {
            **_environment(device, info),
            "acceleration": req.acceleration,
            "batch_size": cfg.batch_size,  # after any out-of-memory back-off
        },
    }
    return json_safe(summary), df
