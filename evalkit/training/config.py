"""Training configuration: one dataclass, recorded verbatim in every checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TrainConfig:
    """Everything a training run depends on. Defaults follow PGD-AT practice on CIFAR
    (eps 8/255, PGD-10 step 2/255, SGD 0.1 momentum 0.9 wd 5e-4, batch 128)."""

    dataset: str = "fashion-mnist-mini"
    arch: str = "smallcnn"
    defense: str = "standard"
    epochs: int = 10
    out: str = "runs/train"
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "multistep"  # multistep | cosine | constant
    milestones: list[int] | None = None  # default: 50% and 75% of the epochs
    gamma: float = 0.1
    eps: float = 8 / 255
    attack_steps: int = 10
    attack_step_size: float | None = None  # default eps/4
    attack_bn: str = "eval"  # BN mode while crafting: eval (TRADES/MART/CAS/...) or train (Madry)
    beta: float | None = None  # TRADES (6.0) / MART (5.0) weight
    defense_params: dict[str, Any] = field(default_factory=dict)  # cas_beta, he_s, ...
    augment: bool | None = None  # default: the dataset's convention (crop+flip for CIFAR/SVHN)
    normalize: bool = True  # dataset mean/std inside the model (False: raw [0, 1] input)
    arch_kwargs: dict[str, Any] = field(default_factory=dict)  # strides, upsample, pool, width
    n_train: int | None = None  # use only the first N training examples (quick runs)
    val_size: int = 500  # held out from the end of the training split
    val_attack_steps: int = 10
    seed: int = 0
    device: str = "auto"
    amp: str = "none"  # none | bf16 (autocast, GPU)
    channels_last: bool = False
    data_root: str | None = None
    download: bool = False
    resume: bool = False
    init: str | None = (
        None  # warm start: weights of this checkpoint (e.g. CIFS's natural pre-training)
    )
    # warm start only from a checkpoint whose last validation clean accuracy reaches this
    # (CIFS: adversarial training from a converged natural model, as the paper does)
    init_min_val_acc: float | None = None
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def attack_step(self) -> float:
        return self.attack_step_size if self.attack_step_size is not None else self.eps / 4

    def objective_beta(self, objective: str) -> float:
        if self.beta is not None:
            return self.beta
        return {"trades": 6.0, "mart": 5.0}.get(objective, 0.0)
