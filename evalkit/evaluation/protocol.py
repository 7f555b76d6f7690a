"""Evaluation protocols: which attacks run, in which order, with which loss and budget.

A :class:`Preset` is a named, ordered list of :class:`AttackPlan` entries plus default eps and
norm. ``default`` is the standard protocol (FGSM; PGD-20 step eps/4 with random start; CW-inf = PGD-30 on
the per-example CW margin; AutoAttack standard; see docs/protocol.md). ``fast`` is a cheap
stand-in for demos and tests; ``aa-fast`` is an AutoAttack-grade evaluation with evalkit's own
APGD-CE + APGD-T (early exit, per-iteration compaction); ``paper-*`` presets follow each seed
paper's own evaluation script so its numbers can be reproduced. Adaptive changes (joint loss for
auxiliary heads, differentiation through the CIFS mask, EOT for randomness, DLR for bounded
logits, BPDA for declared non-differentiable steps) come from :func:`adapt_plans` and the model's
traits, never by hand; docs/defenses.md tabulates them.

Order matters under compaction: cheap attacks go first so the expensive ones (AutoAttack) only
see the points that survived.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from evalkit.attacks.registry import attack_names, get_attack
from evalkit.errors import EvalkitError
from evalkit.utils.suggest import did_you_mean, with_hint


@dataclass(frozen=True)
class AttackPlan:
    """One attack of a protocol.

    ``id`` names the attack in results (``pgd-20``); ``attack`` is the registry name
    (:mod:`evalkit.attacks.registry`); ``family`` lets ``--attacks pgd`` pick this entry.
    Step sizes are given relative to eps (``step_frac``) or absolute (``step_abs``) because
    protocols state them both ways (PGD-20 "eps/4" vs CAS's "0.003").
    """

    id: str
    attack: str
    family: str
    loss: str = "ce"
    joint: bool = False
    eot: int = 1
    options: dict[str, Any] = field(default_factory=dict)
    step_frac: float | None = None
    step_abs: float | None = None
    description: str = ""
    white_box: bool = True
    uses_loss: bool = True  # False: the attack brings its own losses (AutoAttack, Square, Foolbox)
    adaptive: str | None = None  # why it was added/changed for this model (None: protocol's own)
    through_mask: bool = False  # CIFS: gradients flow through the channel mask (adaptive)
    probe: bool = False  # a sanity probe (Square) whose breaks count in the worst case
    diagnostic: bool = False  # a masking diagnostic (plain vs adaptive, uncompacted); counts too

    def resolved_options(self, eps: float, norm: str = "linf") -> dict[str, Any]:
        """Attack options for one eps (step size made absolute). Relative steps are Linf rules;
        under L2 the attack's own default (PGD: ``2.5 * eps / steps``) is used instead."""
        opts = dict(self.options)
        if self.step_abs is not None:
            opts["step_size"] = self.step_abs
        elif self.step_frac is not None and norm == "linf":
            opts["step_size"] = self.step_frac * eps
        return opts

    def describe(self) -> dict[str, Any]:
        """Plain-JSON description for config.json / summary.json ``protocol``."""
        return {
            "id": self.id,
            "attack": self.attack,
            "family": self.family,
            "loss": self.loss,
            "joint": self.joint,
            "eot": self.eot,
            "options": dict(self.options),
            "step_frac": self.step_frac,
            "step_abs": self.step_abs,
            "description": self.description,
            "white_box": self.white_box,
            "uses_loss": self.uses_loss,
            "adaptive": self.adaptive,
            "through_mask": self.through_mask,
            "probe": self.probe,
            "diagnostic": self.diagnostic,
        }

    def line(self) -> str:
        """One human line for the protocol printout."""
        loss = ("joint-" if self.joint else "") + self.loss
        extra = f", EOT-{self.eot}" if self.eot > 1 else ""
        extra += ", through the CIFS mask" if self.through_mask else ""
        tag = f"  [adaptive: {self.adaptive}]" if self.adaptive else ""
        how = f" (loss {loss}{extra})" if self.uses_loss else " (its own losses)"
        return f"{self.id:<18} {self.description}{how}{tag}"


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    attacks: tuple[AttackPlan, ...]
    eps: str = "8/255"
    norm: str = "linf"


def _fgsm() -> AttackPlan:
    return AttackPlan("fgsm", "fgsm", "fgsm", description="FGSM, one signed step of size eps")


def _pgd(
    steps: int,
    *,
    frac: float | None = 0.25,
    step_abs: float | None = None,
    random_start: bool = True,
    loss: str = "ce",
    family: str = "pgd",
    pid: str | None = None,
) -> AttackPlan:
    step_txt = f"step {step_abs:g}" if step_abs is not None else f"step eps*{frac:g}"
    rs = "random start" if random_start else "no random start"
    return AttackPlan(
        pid or f"pgd-{steps}",
        "pgd",
        family,
        loss=loss,
        options={"steps": steps, "random_start": random_start},
        step_frac=None if step_abs is not None else frac,
        step_abs=step_abs,
        description=f"PGD-{steps}, {step_txt}, {rs}",
    )


def default_pgd() -> AttackPlan:
    """The default protocol's PGD-20 (step eps/4, random start, CE)."""
    return _pgd(20)


def _cw_inf(
    steps: int,
    *,
    frac: float | None = 0.25,
    step_abs: float | None = None,
    random_start: bool = True,
) -> AttackPlan:
    plan = _pgd(
        steps,
        frac=frac,
        step_abs=step_abs,
        random_start=random_start,
        loss="cw",
        family="cw",
        pid=f"cw-inf-{steps}" if steps != 30 else "cw-inf",
    )
    return replace(plan, description=f"CW-inf: {plan.description} on the per-example CW margin")


def _aa(version: str = "standard", **options: Any) -> AttackPlan:
    return AttackPlan(
        "autoattack" if version == "standard" and not options else f"autoattack-{version}",
        "autoattack",
        "autoattack",
        options={"version": version, **options},
        uses_loss=False,
        description=f"AutoAttack {version}" + (f" {options}" if options else ""),
    )


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "default",
            "standard protocol: FGSM; PGD-20 (eps/4, random start); CW-inf (PGD-30 on "
            "the CW margin); AutoAttack standard",
            (_fgsm(), _pgd(20), _cw_inf(30), _aa("standard")),
        ),
        Preset(
            "fast",
            "demo/test stand-in: FGSM; PGD-10; CW-inf-10; AutoAttack custom "
            "(APGD-CE + APGD-DLR, 1 restart, 20 iterations)",
            (
                _fgsm(),
                _pgd(10),
                _cw_inf(10),
                _aa("custom", attacks=["apgd-ce", "apgd-dlr"], n_iter=20, n_restarts=1),
            ),
        ),
        Preset(
            "study-cpu",
            "CPU-scale studies: FGSM; PGD-20 (eps/4, random start); CW-inf "
            "(PGD-30 on the CW margin); AutoAttack custom (APGD-CE + APGD-DLR, 100 "
            "iterations, 1 restart; the targeted APGD-T/FAB-T and Square are left out to fit "
            "CPU time)",
            (
                _fgsm(),
                _pgd(20),
                _cw_inf(30),
                _aa("custom", attacks=["apgd-ce", "apgd-dlr"], n_iter=100, n_restarts=1),
            ),
        ),
        Preset(
            "aa-fast",
            "AutoAttack-grade at a fraction of the propagations: evalkit's own APGD-CE then "
            "APGD-T (DLR-targeted, 9 targets, 100 iterations each; the attacks of pyautoattack "
            "version custom [apgd-ce, apgd-t]) with per-point early exit, per-iteration "
            "compaction, and the stopping rules stop_plateau (APGD's step size halved with no "
            "gain) and stop_far (still far from the boundary at the first checkpoint); "
            "skip_far_targets is off: it lost a break on a PGD-AT ResNet-18",
            (
                AttackPlan(
                    "apgd-ce-t",
                    "apgd-ce-t",
                    "apgd",
                    options={
                        "n_iter": 100,
                        "n_target_classes": 9,
                        "stop_plateau": True,
                        "stop_far": True,
                        # off: on the PGD-AT ResNet-18 of bench/aa_fast_models.py it skipped
                        # the targets of a point that a later target breaks (1 of 300, seeds
                        # 0 and 1; stop_plateau alone lost none)
                        "skip_far_targets": False,
                    },
                    uses_loss=False,
                    description="APGD-CE + APGD-T (9 targets x 100 iterations), evalkit's own, "
                    "early exit and the stop_plateau and stop_far rules",
                ),
            ),
        ),
        Preset("pgd", "PGD-20 only (quick check; not a robustness claim)", (_pgd(20),)),
        Preset(
            "paper-cas",
            "CAS (Bai et al. 2021) Trades/pgd_attack_cifar10_cas.py: eps 0.031; "
            "R+FGSM (random start, one step of 8/255); PGD-20 step 0.003; CW-inf PGD-20 step "
            "0.003 on the margin; joint loss beta=2 for CAS models",
            (
                replace(
                    _pgd(1, step_abs=8 / 255),
                    id="rfgsm",
                    family="fgsm",
                    description="R+FGSM: random start, one step of 8/255",
                ),
                _pgd(20, step_abs=0.003),
                _cw_inf(20, step_abs=0.003),
            ),
            eps="0.031",
        ),
        Preset(
            "paper-cifs",
            "CIFS (Yan et al. 2021) run.sh: PGD-20 step 0.8/255, no random "
            "start, joint loss for CIFS models; eps 8/255",
            (_pgd(20, step_abs=0.8 / 255, random_start=False),),
        ),
        Preset(
            "paper-he",
            "HE (Pang et al. 2020): PGD-20 step 0.003 with CE and with the CW "
            "margin, then AutoAttack standard (CE alone overstates HE)",
            (_pgd(20, step_abs=0.003), _cw_inf(20, step_abs=0.003), _aa("standard")),
        ),
        Preset(
            "paper-sap",
            "SAP broken by EOT (Athalye et al. 2018): PGD-100 with EOT, then "
            "AutoAttack rand (EOT-20)",
            (_pgd(100, frac=0.1), _aa("rand")),
        ),
        Preset(
            "paper-rcm",
            "RCM (2022): PGD-20 step 2/255, then AutoAttack standard",
            (_pgd(20, step_abs=2 / 255), _aa("standard")),
        ),
    ]
}


def get_preset(name: str) -> Preset:
    """Look up a preset, listing the known ones on a miss."""
    try:
        return PRESETS[name.strip().lower()]
    except KeyError:
        raise EvalkitError(
            with_hint(
                f"unknown preset {name!r} (known: {', '.join(PRESETS)})",
                did_you_mean(name, PRESETS),
            )
        ) from None


def _registry_plan(raw: str, name: str) -> AttackPlan:
    """A plan for a registry attack named on the command line, with its own defaults."""
    spec = get_attack(raw.strip() if name.startswith("foolbox:") else name)
    return AttackPlan(
        raw.strip() if name.startswith("foolbox:") else name,
        spec.name,
        "foolbox" if name.startswith("foolbox:") else name,
        loss=spec.base_loss or "ce",
        options=dict(spec.defaults),
        description=spec.description or name,
        white_box=spec.white_box,
        uses_loss=spec.base_loss is not None,
    )


def select_attacks(preset: Preset, names: list[str] | None, norm: str) -> list[AttackPlan]:
    """The preset's attacks, or the ones named by ``attacks=`` / ``--attacks``.

    A name first matches a family or id of the preset (``pgd`` -> the preset's PGD entry, ``cw``
    -> CW-inf for Linf or the CW-L2 optimisation attack for L2), then of the default preset;
    otherwise it is a registry attack run with its own defaults (``square``, ``cw_l2``,
    ``foolbox:Name``). Unknown names and attacks without the norm raise :class:`EvalkitError`.
    """
    if not names:
        plans = list(preset.attacks)
    else:
        plans = []
        for raw in names:
            name = raw.strip().lower()
            if not name:
                continue
            if name == "cw" and norm == "l2":
                name = "cw_l2"
            if name == "aa":
                name = "autoattack"
            match = [p for p in preset.attacks if name in (p.id, p.family)]
            for other in ("default", "aa-fast"):
                if not match:
                    match = [p for p in PRESETS[other].attacks if name in (p.id, p.family)]
            if match:
                plans.extend(match)
                continue
            try:
                plans.append(_registry_plan(raw, name))
            except EvalkitError:
                known = sorted({*attack_names(), *(p.family for p in preset.attacks), "cw"})
                ids = {p.id for p in preset.attacks} | {"aa", "apgd-ce"}
                raise EvalkitError(
                    with_hint(
                        f"unknown attack {raw!r} (known: {', '.join(known)}, or foolbox:AttackName)",
                        did_you_mean(raw, {*known, *ids}),
                    )
                ) from None
    out = []
    for p in plans:
        norms = tuple(get_attack(p.attack).norms)
        if norm in norms:
            out.append(p)
        elif names:
            raise EvalkitError(
                f"attack {p.id!r} does not support norm {norm} (it supports {', '.join(norms)})"
            )
    if not out:
        raise EvalkitError(
            f"no attack of preset {preset.name!r} supports norm {norm} (name some attacks)"
        )
    if norm == "l2":  # relative Linf steps give way to the attack's own L2 rule
        out = [
            replace(
                p,
                description=p.description.replace(
                    f"step eps*{p.step_frac:g}", "L2 step 2.5*eps/steps"
                ),
            )
            if p.step_frac is not None and p.step_abs is None
            else p
            for p in out
        ]
        out = [
            replace(
                p,
                id=p.id.replace("cw-inf", "cw-pgd"),
                description=p.description.replace("CW-inf", "CW margin"),
            )
            if p.family == "cw" and p.attack == "pgd"
            else p
            for p in out
        ]
    return _unique_ids(out)


def _unique_ids(plans: list[AttackPlan]) -> list[AttackPlan]:
    """Ids key the records, so repeated ids get ``#2``, ``#3`` suffixes."""
    seen: dict[str, int] = {}
    uniq = []
    for p in plans:
        k = seen.get(p.id, 0)
        seen[p.id] = k + 1
        uniq.append(p if k == 0 else replace(p, id=f"{p.id}#{k + 1}"))
    return uniq


@dataclass(frozen=True)
class ModelTraits:
    """What the harness learned about the model before attacking it."""

    aux_heads: bool = False
    stochastic: bool = False  # declared by a module flag (SAP)
    random_detected: bool = False  # two forward passes on one input differed
    bounded_logits: bool = False
    mask_gradients: bool = False  # CIFS-style mask computed from a gradient (attack through it)
    non_differentiable: bool = False  # declared non-differentiable steps (BPDA copies added)
    bpda_steps: tuple[str, ...] = ()  # what they are, for the record
    beta: float = 2.0
    num_classes: int = 10

    @property
    def random(self) -> bool:
        return self.stochastic or self.random_detected


APGD_LIKE = ("autoattack", "apgd", "apgd-t", "apgd-ce-t")


def _fit_class_count(
    plans: list[AttackPlan], num_classes: int
) -> tuple[list[AttackPlan], list[str]]:
    """Attacks that need more classes than the model has: APGD-CE+T becomes APGD-CE, others
    are dropped; returns (plans, descriptions of what was left out)."""
    out, left = [], []
    for p in plans:
        need = get_attack(p.attack).min_classes
        if num_classes >= need:
            out.append(p)
        elif p.attack == "apgd-ce-t":
            opts = {
                k: v
                for k, v in p.options.items()
                if k not in ("n_target_classes", "skip_far_targets")
            }
            out.append(
                replace(
                    p,
                    id="apgd-ce",
                    attack="apgd",
                    options={**opts, "loss": "ce"},
                    adaptive=f"classes: APGD-T needs >= {need} classes, APGD-CE only",
                )
            )
            left.append(f"APGD-T (needs >= {need} classes)")
        else:
            left.append(f"{p.id} (needs >= {need} classes)")
    return out, left


def _adaptive_record(name: str, reason: str, plans: list[AttackPlan], **extra: Any) -> dict:
    return {"name": name, "reason": reason, "attacks": [p.id for p in plans], **extra}


def adapt_plans(
    plans: list[AttackPlan],
    traits: ModelTraits,
    *,
    eot: int | None = None,
    loss: str | None = None,
    explicit: bool = False,
) -> tuple[list[AttackPlan], list[dict[str, Any]]]:
    """Make the protocol adaptive to the model; returns (plans, adaptive records).

    Every gradient attack is made adaptive in place: EOT over ``eot`` samples (default 20, as
    AutoAttack ``rand``) for randomized models, AutoAttack/APGD with ``eot_iter`` likewise (and
    AutoAttack ``standard`` becomes ``rand``); the joint loss for auxiliary heads; gradients
    through the CIFS mask. Presets also *add* attacks a defense needs: a joint-loss copy of each
    gradient attack (CAS/CIFS), a mask-adaptive joint PGD (CIFS), a DLR-loss PGD (HE). With an
    ``explicit`` attack list nothing is added: the listed attacks are changed in place (joint,
    through the mask) and the additions that were left out are recorded under ``left_out``.
    ``loss`` overrides the loss of every gradient attack but CW. Fewer than 3 classes: DLR is
    undefined and DLR-loss PGD uses the CW margin instead (recorded). Declared
    non-differentiable steps add a BPDA copy of every gradient attack (:func:`with_bpda`),
    with an explicit list too: BPDA is never inferred, the declaration is the user's request.
    """
    random = traits.random
    n_eot = eot if eot is not None else (20 if random else 1)
    out: list[AttackPlan] = []
    left_out: dict[str, list[str]] = {}
    for p in plans:
        if loss and p.uses_loss and p.family != "cw":  # CW is defined by its margin loss
            p = replace(p, loss=loss)
        if p.uses_loss and p.loss == "dlr" and traits.num_classes < 3:
            p = replace(p, loss="cw", adaptive="DLR needs >= 3 classes: CW margin instead")
        if n_eot > 1 and p.uses_loss:
            p = replace(p, eot=n_eot, adaptive=p.adaptive or ("eot" if random else "eot (--eot)"))
        if n_eot > 1 and p.attack in APGD_LIKE:
            p = replace(p, eot=n_eot, options={**p.options, "eot_iter": n_eot})
            p = replace(p, adaptive=p.adaptive or "eot")
        if random and p.attack == "autoattack" and p.options.get("version") == "standard":
            p = replace(
                p,
                id="autoattack-rand",
                options={**p.options, "version": "rand"},
                description=f"AutoAttack rand (APGD-CE + APGD-DLR with EOT-{n_eot})",
                adaptive="randomness",
            )
        if explicit and p.uses_loss and not p.joint and traits.aux_heads:
            p = replace(p, joint=True, adaptive=f"aux heads: joint loss beta={traits.beta:g}")
        if explicit and p.uses_loss and traits.mask_gradients:
            p = replace(p, through_mask=True, adaptive="CIFS: gradients through the mask")
        out.append(p)
        if not explicit and traits.aux_heads and p.uses_loss and not p.joint:
            out.append(
                replace(
                    p,
                    id=f"{p.id}-joint",
                    joint=True,
                    adaptive=f"aux heads: joint loss beta={traits.beta:g}",
                    description=p.description + " + beta*aux-head loss",
                )
            )
    first_pgd = next((i for i, p in enumerate(out) if p.attack == "pgd"), None)
    before_aa = next((i for i, p in enumerate(out) if p.attack == "autoattack"), len(out))
    if traits.mask_gradients and not explicit:
        base = out[first_pgd] if first_pgd is not None else _pgd(20)
        mask_plan = replace(
            base,
            id=f"{base.id.split('-joint')[0]}-mask",
            joint=traits.aux_heads,
            eot=n_eot,
            through_mask=True,
            adaptive="CIFS: joint loss with gradients through the mask",
            description=base.description.split(" + beta")[0] + " through the CIFS mask",
        )
        out.insert(min(before_aa, len(out)), mask_plan)
    elif traits.mask_gradients and not any(p.through_mask for p in out):
        left_out["mask_gradients"] = ["PGD-20 with gradients through the CIFS mask"]
    if traits.bounded_logits and not any(p.loss == "dlr" for p in out):
        dlr_loss = "dlr" if traits.num_classes >= 3 else "cw"
        if explicit:
            left_out["dlr_loss"] = [f"PGD-20 with the {dlr_loss.upper()} loss"]
        else:
            pos = next((i + 1 for i, p in enumerate(out) if p.attack == "pgd"), len(out))
            pos = min(pos, next((i for i, p in enumerate(out) if p.attack == "autoattack"), pos))
            dlr = replace(
                _pgd(20, loss=dlr_loss, pid=f"pgd-20-{dlr_loss}"),
                eot=n_eot,
                joint=traits.aux_heads,
                adaptive=f"bounded logits: {dlr_loss.upper()} loss",
            )
            out.insert(pos, dlr)
    if random and not any(p.attack in APGD_LIKE for p in out):
        left_out["autoattack_rand"] = [f"AutoAttack rand (APGD with EOT-{n_eot})"]
    out, too_few = _fit_class_count(out, traits.num_classes)
    if traits.non_differentiable:
        out = with_bpda(out)
    out = _unique_ids(out)
    adaptive: list[dict[str, Any]] = []
    if too_few:
        adaptive.append(
            {
                "name": "class_count",
                "reason": f"the model has {traits.num_classes} classes",
                "attacks": [p.id for p in out if (p.adaptive or "").startswith("classes")],
                "left_out": too_few,
            }
        )
    joint = [p for p in out if p.joint]
    if traits.aux_heads:
        adaptive.append(
            _adaptive_record(
                "joint_loss", "model has auxiliary heads (CAS/CIFS)", joint, beta=traits.beta
            )
        )
    if traits.mask_gradients:
        adaptive.append(
            _adaptive_record(
                "mask_gradients",
                "CIFS mask is computed from a gradient; these attacks differentiate through it",
                [p for p in out if p.through_mask],
            )
        )
    if n_eot > 1:
        why = (
            "model declares itself stochastic"
            if traits.stochastic
            else "two forward passes on the same input differed"
            if traits.random_detected
            else "requested with eot"
        )
        adaptive.append(_adaptive_record("eot", why, [p for p in out if p.eot > 1], n=n_eot))
    if traits.non_differentiable:
        bpda = [p for p in out if p.attack == "bpda"]
        adaptive.append(
            _adaptive_record(
                "bpda",
                "declared non-differentiable steps (Athalye et al. 2018): "
                + "; ".join(traits.bpda_steps or ("declared",)),
                bpda,
                steps=list(traits.bpda_steps),
                **({"eot": n_eot} if n_eot > 1 else {}),
            )
        )
    aa_rand = [p for p in out if p.attack == "autoattack" and p.options.get("version") == "rand"]
    if random and aa_rand:
        adaptive.append(_adaptive_record("autoattack_rand", "randomness", aa_rand))
    if traits.bounded_logits:
        adaptive.append(
            _adaptive_record(
                "dlr_loss",
                "bounded logits (HE)",
                [p for p in out if p.loss in ("dlr",) or (p.adaptive or "").startswith("bounded")],
            )
        )
    for rec in adaptive:
        if rec["name"] in left_out:
            rec["left_out"] = left_out.pop(rec["name"])
    for name, what in left_out.items():
        adaptive.append(
            {
                "name": name,
                "reason": "needed by the model but not in the explicit attack list",
                "attacks": [],
                "left_out": what,
            }
        )
    return out, adaptive


def bpda_plan(p: AttackPlan) -> AttackPlan:
    """``p`` run with BPDA gradients (registry attack ``bpda`` wrapping ``p.attack``): the
    same loss, EOT and options; id ``<id>-bpda``."""
    eot = f", EOT-{p.eot}" if p.eot > 1 else ""
    return replace(
        p,
        id=f"{p.id}-bpda",
        attack="bpda",
        options={"attack": p.attack, **p.options},
        adaptive=f"BPDA: backward approximation of the non-differentiable steps{eot}",
        description=f"{p.description} with BPDA (declared backward of non-differentiable steps)",
    )


def with_bpda(plans: list[AttackPlan]) -> list[AttackPlan]:
    """The plans plus a BPDA copy of each gradient attack (Athalye et al. 2018). The plain
    attacks stay: their numbers are the obfuscated ones a non-adaptive evaluation reports.
    Order follows the protocol's rule (cheap first): the copies of the cheap attacks run after
    the plain cheap ones and before the first APGD/AutoAttack entry; each APGD/AutoAttack
    entry is followed by its own copy."""
    first_aa = next((i for i, p in enumerate(plans) if p.attack in APGD_LIKE), len(plans))
    cheap, rest = plans[:first_aa], plans[first_aa:]

    def wanted(p: AttackPlan) -> bool:
        return p.white_box and not p.probe and p.attack != "bpda"

    out = cheap + [bpda_plan(p) for p in cheap if wanted(p)]
    for p in rest:
        out.append(p)
        if wanted(p):
            out.append(bpda_plan(p))
    return out
