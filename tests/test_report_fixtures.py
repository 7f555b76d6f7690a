"""Fixture run directories following the harness's summary.json schema (helpers, no tests).

Used by the report tests for the cases real runs cannot cheaply produce (hostile strings,
several eps, flags of every severity); the end-to-end tests use real run directories.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd


def make_summary(
    *,
    clean: float = 0.81,
    pgd: float = 0.42,
    fgsm: float = 0.55,
    eps=("4/255", "8/255"),
    name: str = "standard",
    flags: list[dict[str, Any]] | None = None,
    model_extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A summary.json dict whose numbers the tests look for in the HTML."""
    results, worst = [], []
    for k, e in enumerate(eps):
        value = float(e.split("/")[0]) / float(e.split("/")[1])
        shrink = 1.0 + 0.5 * (len(eps) - 1 - k)  # smaller eps -> higher accuracy
        results.append(
            {
                "attack": "fgsm",
                "eps": e,
                "eps_value": value,
                "robust_accuracy": min(clean, fgsm * shrink),
                "n_robust": 1,
                "cumulative": True,
            }
        )
        results.append(
            {
                "attack": "pgd-10",
                "eps": e,
                "eps_value": value,
                "robust_accuracy": min(clean, pgd * shrink),
                "n_robust": 1,
                "cumulative": True,
            }
        )
        worst.append(
            {"eps": e, "eps_value": value, "robust_accuracy": min(clean, pgd * shrink) - 0.01}
        )
    history = [
        {
            "epoch": i + 1,
            "loss": 2.0 / (i + 1),
            "clean_acc": 0.5 + 0.1 * i,
            "pgd_acc": 0.2 + 0.05 * i,
            "lr": 0.1,
        }
        for i in range(3)
    ]
    model = {
        "arch": "smallcnn",
        "dataset": "fashion-mnist-mini",
        "defense": name,
        "defense_params": {},
        "train_config": {"epochs": 3, "lr": 0.1},
        "history": history,
        "path": f"/tmp/{name}/checkpoint.pt",
    }
    model.update(model_extra or {})
    per_class = [
        {
            "class": c,
            "name": f"class{c}",
            "n": 10,
            "clean_accuracy": 0.5 + 0.04 * c,
            "robust_accuracy": {e: 0.1 + 0.03 * c for e in eps},
        }
        for c in range(10)
    ]
    return {
        "n_examples": 100,
        "clean_accuracy": clean,
        "results": results,
        "worst_case": worst,
        "seed": 7,
        "flags": flags if flags is not None else [],
        "adaptive": [],
        "model": model,
        "protocol": {
            "preset": "fast",
            "eps": list(eps),
            "norm": "linf",
            "attacks": [{"id": "fgsm", "loss": "ce"}, {"id": "pgd-10", "loss": "ce", "eot": 1}],
        },
        "cost": {"wall_time_s": 12.5, "forward_passes": 12345, "backward_passes": 6789},
        "environment": {"torch": "2.x", "device": "cpu"},
        "per_class": per_class,
    }


def make_run_dir(path: Path, summary: dict[str, Any], config: dict[str, Any] | None = None) -> Path:
    """Write summary.json, config.json and a small examples.parquet into ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "summary.json").write_text(json.dumps(summary))
    (path / "config.json").write_text(json.dumps(config or {"preset": "fast", "n": 100}))
    pd.DataFrame(
        {
            "index": range(4),
            "label": [0, 1, 0, 1],
            "clean_pred": [0, 1, 1, 1],
            "clean_correct": [True, True, False, True],
        }
    ).to_parquet(path / "examples.parquet")
    return path


class _Tables(HTMLParser):
    """Collect every <table> as (class attribute, rows of cell texts)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[tuple[str, list[list[str]]]] = []
        self._stack: list[tuple[str, list[list[str]]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._stack.append((dict(attrs).get("class") or "", []))
        elif tag == "tr" and self._stack:
            self._stack[-1][1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._stack and self._stack[-1][1]:
            self._stack[-1][1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table" and self._stack:
            self.tables.append(self._stack.pop())

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables(html: str, cls: str) -> list[list[list[str]]]:
    """All tables whose class list holds ``cls``, as rows of cell texts, in document order."""
    parser = _Tables()
    parser.feed(html)
    return [rows for c, rows in parser.tables if cls in c.split()]


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def pct_ci(x: float, ci: list[float]) -> str:
    """How the report shows an accuracy with its 95% interval: ``42.33 [36.7, 48.1]``."""
    return f"{100 * x:.2f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


XSS = "<script>alert(1)</script>"
XSS_IMG = "<img src=x onerror=alert(2)>"


def make_real_run(
    root: Path,
    name: str,
    *,
    defense: str | None = None,
    note: str | None = None,
    folder: str = "model",
    eps=("4/255", "8/255"),
    n: int = 48,
) -> Path:
    """A real run directory: train a tiny smallcnn for one epoch with the trainer, then attack
    it with the harness. ``note`` is planted in the checkpoint's training config (as a hostile
    checkpoint would carry it); ``folder`` names the checkpoint's directory."""
    import torch

    from evalkit.evaluation import evaluate
    from evalkit.training import TrainConfig, train

    ckpt = train(
        TrainConfig(
            dataset="fashion-mnist-mini",
            arch="smallcnn",
            arch_kwargs={"width": 4},
            epochs=1,
            n_train=256,
            val_size=64,
            val_attack_steps=1,
            batch_size=64,
            out=str(root / folder),
            device="cpu",
            progress=False,
            seed=1,
        )
    )
    if note is not None:
        obj = torch.load(ckpt, weights_only=True)
        obj["train_config"]["note"] = note
        torch.save(obj, ckpt)
    out = root / name
    evaluate(
        ckpt,
        n=n,
        attacks=["fgsm", "pgd"],
        preset="fast",
        eps=list(eps),
        defense=defense,
        out=out,
        device="cpu",
        progress=False,
        echo=False,
        seed=3,
        eot=2 if defense == "sap" else None,
    )
    return out


def make_analysis_dir(path: Path, finding: str = "at-cas: fewer activated channels") -> Path:
    """An analysis folder in the AnalysisWriter layout, with one real PNG figure."""
    from matplotlib.figure import Figure

    path.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(2, 2))
    fig.add_subplot(1, 1, 1).bar(range(8), range(8))
    fig.savefig(path / "magnitude_std.png", format="png")
    (path.parent / "outside.png").write_bytes((path / "magnitude_std.png").read_bytes())
    doc = {
        "study": "channels",
        "finding": finding,
        "models": [{"label": "std", "arch": "smallcnn"}, {"label": "at", "arch": "smallcnn"}],
        "params": {"eps": 0.031, "steps": 20},
        "scalars": {
            "std": {"mean_magnitude_natural": 0.41, "entropy_natural": 0.99},
            "at": {"mean_magnitude_natural": 0.44, "entropy_natural": 0.98},
        },
        "files": {
            "figures": [
                {
                    "name": "magnitude_std",
                    "png": "magnitude_std.png",
                    "svg": "magnitude_std.svg",
                    "caption": "std: per-channel magnitude",
                },
                {"name": "escape", "png": "../outside.png", "caption": "must not be embedded"},
            ],
            "tables": [{"name": "channels", "csv": "channels.csv"}],
        },
    }
    (path / "analysis.json").write_text(json.dumps(doc))
    return path


def chromium_binary() -> str | None:
    return (
        shutil.which("chromium")
        or shutil.which("chromium-browser")
        or shutil.which("google-chrome")
    )


def run_chromium(
    html_path: Path, tmp: Path, *, screenshot: Path | None = None, dump_dom: bool = False
) -> subprocess.CompletedProcess:
    """Open ``html_path`` in headless Chromium, logging the page console to stderr."""
    binary = chromium_binary()
    assert binary is not None
    profile = tmp / f"chrome-profile-{len(list(tmp.glob('chrome-profile-*')))}"
    profile.mkdir()
    args = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1200,1600",
    ]
    if screenshot is not None:
        args.append(f"--screenshot={screenshot}")
    if dump_dom:
        args.append("--dump-dom")
    args.append(html_path.resolve().as_uri())
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def console_errors(stderr: str) -> list[str]:
    """Page-console lines Chromium logged: uncaught errors, CSP violations, console.error."""
    return [
        line
        for line in stderr.splitlines()
        if "Uncaught" in line
        or "ERROR:CONSOLE" in line
        or ("CONSOLE" in line and "ERROR" in line)
        or "Content Security Policy" in line
    ]


def png_variance(path: Path) -> float:
    """Pixel variance of a PNG: ~0 for a blank (single-colour) image."""
    from matplotlib.image import imread

    return float(imread(str(path))[..., :3].var())
