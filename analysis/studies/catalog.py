"""The five seed-paper findings as runnable studies (cpu and gpu scales).

Scales: ``cpu`` trains the small CNN on the bundled Fashion-MNIST subset (minutes on 2 cores);
``gpu`` trains ResNet-18 on the full Fashion-MNIST (reduced epochs; pass ``--dataset cifar10
--eps 8/255`` where CIFAR-10 is available). Fashion-MNIST's usual Linf budget is 0.1, CIFAR's 8/255.
"""

from __future__ import annotations

from analysis.studies import judges
from analysis.studies.spec import ModelDef, Scale, Study, StudyContext

CPU = Scale(
    "cpu",
    dataset="fashion-mnist-mini",
    arch="smallcnn",
    epochs=8,
    eps="0.1",
    n_eval=500,
    preset="study-cpu",
    train_args=("--width", "16", "--lr", "0.05", "--attack-steps", "7"),
    notes="small CNN (width 16) on the bundled 5,000/1,000 Fashion-MNIST subset; 8 epochs; "
    "PGD-7 training attack (step eps/4); 500 test images",
)
GPU = Scale(
    "gpu",
    dataset="fashion-mnist",
    arch="resnet18",
    epochs=15,
    eps="0.1",
    n_eval=1000,
    preset="default",
    train_args=("--batch-size", "128", "--lr", "0.1"),
    notes="ResNet-18 on the full Fashion-MNIST (60k/10k), 15 epochs (reduced from the "
    "papers' 100-200), PGD-10 training attack; 1,000 test images",
)
SCALES = {"cpu": CPU, "gpu": GPU}


def _attack_runs(ctx: StudyContext, keys: list[str], preset: str | None = None) -> list[list[str]]:
    return [
        [
            "attack",
            "--ckpt",
            str(ctx.ckpt(k)),
            "--preset",
            preset or ctx.scale.preset,
            "--eps",
            ctx.scale.eps,
            "--n",
            str(ctx.scale.n_eval),
            "--out",
            str(ctx.run_dir(k)),
            "--seed",
            str(ctx.seed),
            "--device",
            ctx.device,
            "--no-progress",
        ]
        for k in keys
    ]


# The CIFS paper adversarially trains from a naturally trained CIFS model (seeds.md §2a); from
# scratch AT+CIFS diverged here in its first epochs (clean accuracy ~41% after 8 epochs).
CIFS_NAT = ModelDef("cifs_nat", "cifs")
STD, AT, AT_CAS, AT_CIFS, AT_HE = (
    ModelDef("std", "standard"),
    ModelDef("at", "at"),
    ModelDef("at_cas", "at+cas"),
    ModelDef("at_cifs", "at+cifs", ("--init", "{models}/cifs_nat/checkpoint.pt")),
    ModelDef("at_he", "at+he"),
)
GPU_EXTRA = [
    ModelDef("trades", "trades"),
    ModelDef("trades_cas", "trades+cas"),
    ModelDef("mart", "mart"),
    ModelDef("mart_cas", "mart+cas"),
]


def _channel_analyses(ctx: StudyContext) -> list[list[str]]:
    ckpts = [a for k in ("std", "at", "at_cas", "at_cifs") for a in ("--ckpt", str(ctx.ckpt(k)))]
    common = [
        "--eps",
        ctx.scale.eps,
        "--n",
        str(ctx.scale.n_eval * 2),
        "--device",
        ctx.device,
        "--seed",
        str(ctx.seed),
        "--quiet",
    ]
    return [
        [
            "analyze",
            *ckpts,
            "--study",
            "channels",
            "--class",
            "0",
            *common,
            "--out",
            str(ctx.analysis_dir("channels")),
        ],
        [
            "analyze",
            "--ckpt",
            str(ctx.ckpt("at_cifs")),
            "--study",
            "importance",
            *common,
            "--out",
            str(ctx.analysis_dir("importance")),
        ],
    ]


def _sap_analyses(ctx: StudyContext) -> list[list[str]]:
    return [
        [
            "analyze",
            "--ckpt",
            str(ctx.ckpt("std")),
            "--ckpt",
            str(ctx.ckpt("at")),
            "--study",
            "sap-eot",
            "--eps",
            "0.05,0.1" if ctx.scale.eps == "0.1" else "4/255,8/255",
            "--n",
            str(SAP_N[ctx.scale.name]),
            "--steps",
            "10",
            "--device",
            ctx.device,
            "--seed",
            str(ctx.seed),
            "--quiet",
            "--out",
            str(ctx.analysis_dir("sap-eot")),
        ]
    ]


# SAP makes every forward pass stochastic and EOT multiplies the passes per step (up to 20x):
# fewer test images keep the CPU scale in minutes.
SAP_N = {"cpu": 100, "gpu": 500}


def _sap_evaluations(ctx: StudyContext) -> list[list[str]]:
    base = [
        "--eps",
        ctx.scale.eps,
        "--n",
        str(SAP_N[ctx.scale.name]),
        "--seed",
        str(ctx.seed),
        "--device",
        ctx.device,
        "--no-progress",
        "--preset",
        "pgd",
    ]
    return [
        ["attack", "--ckpt", str(ctx.ckpt("std")), *base, "--out", str(ctx.run_dir("std_dense"))],
        [
            "attack",
            "--ckpt",
            str(ctx.ckpt("std")),
            "--defense",
            "sap",
            *base,
            "--eot",
            "1",
            "--out",
            str(ctx.run_dir("std_sap_no_eot")),
        ],
        [
            "attack",
            "--ckpt",
            str(ctx.ckpt("std")),
            "--defense",
            "sap",
            *base,
            "--out",
            str(ctx.run_dir("std_sap_auto")),
        ],
    ]


def _pooling_analyses(ctx: StudyContext) -> list[list[str]]:
    """CPU: smallcnn maps 4x4, 7x7, 14x14 (28x28, strides 1111, costs ~4x more: add it with
    ``python -m analysis.pooling --configs ...``); GPU: ResNet-18 4x4 to 28x28."""
    s = ctx.scale
    args = [
        "python",
        "analysis.pooling",
        "--out",
        str(ctx.analysis_dir("pooling")),
        "--dataset",
        s.dataset,
        "--train-eps",
        s.eps,
        "--eps",
        s.eps,
        "--device",
        ctx.device,
        "--seed",
        str(ctx.seed),
        "--quiet",
        "--train-dir",
        str(ctx.models_dir / "pooling"),
    ]
    if s.name == "cpu":
        return [
            args
            + [
                "--arch",
                "smallcnn",
                "--configs",
                "1222,1221,1221@2",
                "--epochs",
                str(s.epochs),
                "--n-train",
                "4500",
                "--n",
                "500",
            ]
        ]
    return [
        args
        + [
            "--arch",
            "resnet18",
            "--configs",
            "1222,1122,1222@2,1111",
            "--epochs",
            "10",
            "--n-train",
            "60000",
            "--n",
            "1000",
            "--width",
            "64",
        ]
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
            evaluations=lambda ctx: _attack_runs(
                ctx, ["std", "at", "at_cas", "at_cifs"], preset="pgd"
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
                [AT, AT_CAS, CIFS_NAT, AT_CIFS] + (GPU_EXTRA if scale.name == "gpu" else [])
            ),
            evaluations=lambda ctx: _attack_runs(
                ctx,
                ["at", "at_cas", "at_cifs"]
                + ([m.key for m in GPU_EXTRA] if ctx.scale.name == "gpu" else []),
            ),
            analyses=lambda ctx: [],
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
            evaluations=lambda ctx: _attack_runs(ctx, ["at", "at_he"]),
            analyses=lambda ctx: [],
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
            models=lambda scale: [STD, AT],
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
            models=lambda scale: [],
            evaluations=lambda ctx: [],
            analyses=_pooling_analyses,
            judge=judges.judge_pooling,
            scales=SCALES,
        ),
    ]
}
