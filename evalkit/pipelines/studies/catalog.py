"""The five seed-paper findings and Athalye et al.'s BPDA finding as runnable studies, at three
scales.

Scales (Fashion-MNIST's usual Linf budget is 0.1, CIFAR's 8/255; every scale trains each model
with seeds 0, 1, 2):

* ``cpu``: the small CNN (width 16) on the bundled 5,000/1,000 Fashion-MNIST subset.
* ``medium``: ResNet-18 at width 16 (a quarter of the channels) on the full Fashion-MNIST
  (60,000/10,000; ``fashion-mnist``, found in evalkit's data folder or
  ``/usr/share/datasets/fashion-mnist``, else pass ``--data-root``). Cost measured with
  ``python bench/study_cost.py --scale medium --studies channels,cas-cifs --subset 300
  --repeats 2`` on an otherwise idle 2-core machine (per-image cost from one epoch on 300 and
  on 600 images, the least of 2 timings; ``bench/results/study_cost_medium.json``): PGD-AT
  6.7 ms per image (6.7 min per epoch on the full split; AT+CAS 6.7 ms, AT+CIFS 6.9 ms),
  standard training 1.35 ms and natural CIFS 1.6 ms (1.3-1.6 min per epoch); so about 0.45 h
  per adversarially trained model (4 epochs) and 4.7 h of training for the channel and cas-cifs
  studies' five models times three seeds, before evaluation (1,000 test images per model) and
  the analyses.
* ``gpu``: ResNet-18 (width 64) on the full Fashion-MNIST, 15 epochs (the papers train
  100-200), the default protocol with AutoAttack standard.

The channel and importance analyses attack with PGD-20, step eps/4, random start and the
adaptive joint loss for auxiliary heads: the same adversary as the protocol's PGD-20 at the
same eps (not the CAS analysis's 0.003 step, which cannot leave a 0.06-radius ball in 20 steps).
"""

from __future__ import annotations

from typing import Any

from analysis.studies import bpda as bpda_judge
from analysis.studies import judges
from evalkit.pipelines.studies.spec import ModelDef, Scale, Study, StudyContext
from evalkit.pipelines.studies.steps import Step
from evalkit.utils.parse import parse_eps

CPU = Scale(
    "cpu",
    dataset="fashion-mnist-mini",
    arch="smallcnn",
    epochs=15,
    eps="0.1",
    n_eval=500,
    preset="study-cpu",
    train_options={"width": 16, "lr": 0.05, "attack_steps": 7},
    notes="small CNN (width 16; CAS/CIFS on its last block) on the bundled 5,000/1,000 "
    "Fashion-MNIST subset; 15 epochs (lr 0.05, x0.1 at epochs 7 and 11: validation accuracy "
    "has levelled off); PGD-7 training attack (step eps/4); 500 test images",
)
MEDIUM = Scale(
    "medium",
    dataset="fashion-mnist",
    arch="resnet18",
    epochs=4,
    eps="0.1",
    n_eval=1000,
    preset="study-cpu",
    train_options={"width": 16, "lr": 0.1, "attack_steps": 5, "schedule": "cosine"},
    notes="ResNet-18 at width 16 on the full Fashion-MNIST (60,000/10,000); 4 epochs, cosine "
    "schedule; PGD-5 training attack (step eps/4); 1,000 test images",
)
GPU = Scale(
    "gpu",
    dataset="fashion-mnist",
    arch="resnet18",
    epochs=15,
    eps="0.1",
    n_eval=1000,
    preset="default",
    train_options={"batch_size": 128, "lr": 0.1},
    notes="ResNet-18 on the full Fashion-MNIST (60k/10k), 15 epochs (reduced from the "
    "papers' 100-200), PGD-10 training attack; 1,000 test images",
)
SCALES = {"cpu": CPU, "medium": MEDIUM, "gpu": GPU}

# SAP makes every forward pass stochastic and EOT multiplies the passes per step (up to 20x)
SAP_N = {"cpu": 300, "medium": 500, "gpu": 1000}
# analyses read twice the evaluation's test images (class 0 only for the channel study)
ANALYSIS_N_FACTOR = 2


def _eps_value(ctx: StudyContext) -> float:
    return parse_eps(ctx.scale.eps)


def _data(ctx: StudyContext) -> dict[str, Any]:
    """The data arguments every evaluation and analysis step shares."""
    kw: dict[str, Any] = {"data": ctx.scale.dataset}
    if ctx.scale.data_root:
        kw["data_root"] = ctx.scale.data_root
    return kw


def evaluate_step(
    ctx: StudyContext,
    key: str,
    seed: int,
    *,
    run_key: str | None = None,
    preset: str | None = None,
    n: int | None = None,
    **extra: Any,
) -> Step:
    """:func:`evalkit.evaluation.api.evaluate` of model ``key`` (seed ``seed``) into
    ``runs/RUN_KEY-s<seed>``; ``extra`` adds e.g. ``defense="sap"``, ``eot=1``."""
    return Step(
        "evaluate",
        {
            "model": str(ctx.ckpt(key, seed)),
            **_data(ctx),
            "eps": ctx.scale.eps,
            "preset": preset or ctx.scale.preset,
            "n": n or ctx.scale.n_eval,
            "seed": seed,
            "device": ctx.device,
            **extra,
            "out": str(ctx.run_dir(run_key or key, seed)),
        },
    )


def analyze_step(
    ctx: StudyContext, analysis: str, keys: list[str], seed: int, **options: Any
) -> Step:
    """:func:`evalkit.analyses.analyze` of the models ``keys`` (seed ``seed``), labelled by key,
    into ``analysis/ANALYSIS-s<seed>``."""
    return Step(
        "analyze",
        {
            "models": {k: str(ctx.ckpt(k, seed)) for k in keys},
            "analysis": analysis,
            **_data(ctx),
            "seed": seed,
            "device": ctx.device,
            **options,
            "out": str(ctx.analysis_dir(analysis, seed)),
        },
    )


# CIFS's recipe. The paper adversarially trains from a converged, naturally trained CIFS model:
# the AT stage refuses a warm start below CIFS_INIT_MIN_VAL_ACC validation accuracy (or one that
# failed its training-health checks). The masks are scaled by the channel count (mean 1 instead
# of sum 1, `cifs_mask_scale=channels`): with the paper's sum-1 softmax the masked features are C
# times smaller than the unmasked ones and the classifier after them never caught up within the
# scale's epochs (the output stays far below its own probe; the cas-cifs study trains the
# paper's version as an ablation and reports its training health); scaled, the selection (the
# softmax over channels) is the same and the output trains like the probe.
CIFS_PARAMS = {"cifs_mask_scale": "channels"}
CIFS_INIT_MIN_VAL_ACC = 0.8
CIFS_NAT = ModelDef("cifs_nat", "cifs", {"params": CIFS_PARAMS, "weight_decay": 2e-4})
# the ablation that shows why: natural CIFS with the paper's sum-1 masks (trained, not attacked;
# the cas-cifs findings report its training health)
CIFS_NAT_PAPER = ModelDef("cifs_nat_paper", "cifs", {"weight_decay": 2e-4})
STD, AT, AT_CAS, AT_CIFS, AT_HE = (
    ModelDef("std", "standard"),
    ModelDef("at", "at"),
    ModelDef("at_cas", "at+cas"),
    ModelDef(
        "at_cifs",
        "at+cifs",
        {"params": CIFS_PARAMS, "init_min_val_acc": CIFS_INIT_MIN_VAL_ACC},
        init="cifs_nat",
    ),
    ModelDef("at_he", "at+he"),
)
GPU_EXTRA = [
    ModelDef("trades", "trades"),
    ModelDef("trades_cas", "trades+cas"),
    ModelDef("mart", "mart"),
    ModelDef("mart_cas", "mart+cas"),
]
ALL_MODELS = [CIFS_NAT, CIFS_NAT_PAPER, STD, AT, AT_CAS, AT_CIFS, AT_HE, *GPU_EXTRA]


# what each defense plugin makes the harness adapt to (evalkit.defenses.context flags)
PLUGIN_TRAITS = {
    "cas": ("aux_heads",),
    "cifs": ("aux_heads", "mask_gradients"),
    "he": ("bounded_logits",),
    "sap": ("stochastic",),
    "bitdepth": ("non_differentiable",),
    "jpeg": ("non_differentiable",),
    "median": ("non_differentiable",),
    "bpda": ("non_differentiable",),
}


def union_of_traits(defenses: list[str]) -> dict[str, bool]:
    """Traits any of the compared models' defense SPECs brings: every model of a comparison is
    evaluated with the adaptive attacks any of them needs (``evaluate(adapt_for=...)``), so a
    gap between them is never a gap between protocols."""
    from evalkit.defenses.spec import parse_spec

    out: dict[str, bool] = {}
    for spec in defenses:
        for part in parse_spec(spec).plugins:
            for trait in PLUGIN_TRAITS.get(part, ()):
                out[trait] = True
    return out


def _attack_runs(
    ctx: StudyContext, seed: int, keys: list[str], preset: str | None = None
) -> list[Step]:
    defs = {m.key: m.defense for m in ALL_MODELS}
    union = union_of_traits([defs[k] for k in keys])
    extra = {"adapt_for": union} if union else {}
    return [evaluate_step(ctx, k, seed, preset=preset, **extra) for k in keys]


def _harness_pgd(ctx: StudyContext) -> dict[str, Any]:
    """The protocol's PGD-20 (step eps/4, random start) as analysis options."""
    return {"steps": 20, "step_size": _eps_value(ctx) / 4, "eps": ctx.scale.eps}


def _channel_analyses(ctx: StudyContext, seed: int) -> list[Step]:
    n = ctx.scale.n_eval * ANALYSIS_N_FACTOR
    return [
        analyze_step(
            ctx,
            "channels",
            ["std", "at", "at_cas", "at_cifs"],
            seed,
            class_k=0,
            n=n,
            **_harness_pgd(ctx),
        ),
        analyze_step(ctx, "importance", ["at_cifs"], seed, n=n, **_harness_pgd(ctx)),
    ]


def _sap_eps(ctx: StudyContext) -> list[str]:
    """Half the study's eps and the eps itself (SAP is judged at the smallest)."""
    text = ctx.scale.eps
    if "/" in text:
        num, den = text.split("/", 1)
        return [f"{float(num) / 2:g}/{den}", text]
    return [f"{_eps_value(ctx) / 2:g}", text]


def _sap_analyses(ctx: StudyContext, seed: int) -> list[Step]:
    return [
        analyze_step(
            ctx,
            "sap-eot",
            ["std"],  # the claims are about the standard-trained model
            seed,
            eps=_sap_eps(ctx),
            n=SAP_N[ctx.scale.name],
            steps=10,
        )
    ]


def _sap_evaluations(ctx: StudyContext, seed: int) -> list[Step]:
    common = {"preset": "pgd", "n": SAP_N[ctx.scale.name]}
    return [
        evaluate_step(ctx, "std", seed, run_key="std_dense", **common),
        evaluate_step(ctx, "std", seed, run_key="std_sap_no_eot", defense="sap", eot=1, **common),
        evaluate_step(ctx, "std", seed, run_key="std_sap_auto", defense="sap", **common),
    ]


def _bpda_evaluations(ctx: StudyContext, seed: int) -> list[Step]:
    """The standard model undefended and behind each input transformation (its defense part's
    defaults), PGD-20 (plus, behind a transformation, its BPDA copy): judged at the scale's eps,
    half of it recorded beside."""
    common = {"preset": "pgd", "eps": list(reversed(_sap_eps(ctx)))}
    steps = [evaluate_step(ctx, "std", seed, run_key=bpda_judge.DENSE_KEY, **common)]
    for part, _ in bpda_judge.TRANSFORMS:
        steps.append(
            evaluate_step(
                ctx, "std", seed, run_key=bpda_judge.run_key(part), defense=part, **common
            )
        )
    return steps


# ---------------------------------------------------------------------------- pooling grid

# (stage strides, in-model upsampling) per scale: smallcnn on 28x28 gives 4x4, 7x7, 14x14 maps
# (1111 -> 28x28 costs several times more); ResNet-18: 1222 -> 4x4, 1122 -> 7x7,
# 1222@2 -> 7x7 from 56x56 input, 1111 -> 28x28
POOLING_CONFIGS = {
    "cpu": [("1222", 1), ("1221", 1), ("1221", 2)],
    "medium": [("1222", 1), ("1122", 1), ("1112", 1)],
    "gpu": [("1222", 1), ("1122", 1), ("1222", 2), ("1111", 1)],
}
POOLING_TRAIN = {
    "cpu": {"width": 8, "n_train": 4500, "batch_size": 64, "lr": 0.05, "attack_steps": 3},
    "medium": {"attack_steps": 3},
    "gpu": {"epochs": 10},
}
POOLING_N = {"cpu": 500, "medium": 1000, "gpu": 1000}


def pooling_models(scale: Scale) -> list[ModelDef]:
    """PGD-AT models that differ only in the feature-map size before pooling and its type."""
    from evalkit.pipelines.pooling import grid_models

    return grid_models(
        POOLING_CONFIGS[scale.name],
        pools=("avg", "max"),
        options={"val_size": 0, **POOLING_TRAIN[scale.name]},
    )


def _pooling_analyses(ctx: StudyContext, seed: int) -> list[Step]:
    keys = [m.key for m in pooling_models(ctx.scale)]
    return [
        analyze_step(
            ctx,
            "pooling",
            keys,
            seed,
            eps=ctx.scale.eps,
            n=POOLING_N[ctx.scale.name],
            steps=10,
        )
    ]


STUDIES: dict[str, Study] = {
    s.name: s
    for s in [
        Study(
            "channels",
            "Channel activation magnitude and uniformity (CAS Figures 1-2)",
            "Bai et al., ICLR 2021 (CAS), §3; Yan et al., ICML 2021 (CIFS)",
            claims=[
                "adversarial examples activate channels with higher magnitude than natural ones (standard model)",
                "adversarial examples activate channels more uniformly than natural ones (standard model)",
                "adversarial training closes the magnitude gap",
                "adversarial training does not remove the uniformity gap",
                "CAS makes channel activation less uniform than plain AT",
            ],
            models=lambda scale: [STD, AT, AT_CAS, CIFS_NAT, AT_CIFS],
            evaluations=lambda ctx, seed: _attack_runs(
                ctx, seed, ["std", "at", "at_cas", "at_cifs"], preset="pgd"
            ),
            analyses=_channel_analyses,
            judge=judges.judge_channels,
            scales=SCALES,
        ),
        Study(
            "cas-cifs",
            "CAS and CIFS on top of adversarial training",
            "Bai et al., ICLR 2021 (CAS); Yan et al., ICML 2021 (CIFS)",
            claims=[
                "CAS improves robust accuracy over its base objective under adaptive attacks",
                "CIFS improves robust accuracy over its base objective under adaptive attacks",
            ],
            models=lambda scale: (
                [AT, AT_CAS, CIFS_NAT, AT_CIFS, CIFS_NAT_PAPER]
                + (GPU_EXTRA if scale.name == "gpu" else [])
            ),
            evaluations=lambda ctx, seed: _attack_runs(
                ctx,
                seed,
                ["at", "at_cas", "at_cifs"]
                + ([m.key for m in GPU_EXTRA] if ctx.scale.name == "gpu" else []),
            ),
            analyses=lambda ctx, seed: [],
            judge=judges.judge_cas_cifs,
            scales=SCALES,
        ),
        Study(
            "he",
            "Hypersphere embedding with PGD-AT",
            "Pang et al., NeurIPS 2020 (HE)",
            claims=[
                "HE improves PGD-AT's worst-case robust accuracy under margin/DLR attacks",
                "CE-only PGD overstates HE's robustness more than plain AT's",
            ],
            models=lambda scale: [AT, AT_HE],
            evaluations=lambda ctx, seed: _attack_runs(ctx, seed, ["at", "at_he"]),
            analyses=lambda ctx, seed: [],
            judge=judges.judge_he,
            scales=SCALES,
        ),
        Study(
            "sap-eot",
            "Stochastic activation pruning under EOT",
            "Dhillon et al., ICLR 2018 (SAP); Athalye, Carlini & Wagner, ICML 2018",
            claims=[
                "SAP looks more robust than the dense model under plain (single-sample) PGD",
                "SAP's apparent robustness vanishes under EOT",
            ],
            models=lambda scale: [STD],
            evaluations=_sap_evaluations,
            analyses=_sap_analyses,
            judge=judges.judge_sap,
            scales=SCALES,
        ),
        Study(
            "pooling",
            "Feature-map size before pooling (RCM)",
            "Understanding Adversarial Robustness from Feature Maps of Convolutional Layers (arXiv 2202.12435)",
            claims=[
                "larger feature maps before average pooling give higher robust accuracy",
                "the same does not hold for max pooling",
                "with larger maps the average-pooled feature changes less under attack, more so than with max pooling",
            ],
            models=pooling_models,
            evaluations=lambda ctx, seed: [],
            analyses=_pooling_analyses,
            judge=judges.judge_pooling,
            scales=SCALES,
        ),
        Study(
            "bpda",
            "Input transformations under BPDA (shattered gradients)",
            "Guo et al., ICLR 2018 (input transformations); Athalye, Carlini & Wagner, ICML 2018 "
            "(BPDA)",
            claims=bpda_judge.claims(),
            models=lambda scale: [STD],
            evaluations=_bpda_evaluations,
            analyses=lambda ctx, seed: [],
            judge=bpda_judge.judge_bpda,
            scales=SCALES,
        ),
    ]
}
