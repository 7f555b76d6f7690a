"""Reading what a study's commands wrote, one folder per training seed, into the typed values
of :mod:`analysis.studies.values`. Kept apart from the judges (``judge_<study>.py``), which
read no files, so each rule is unit-tested on constructed numbers and each reader on
hand-written folders.

Training seeds: when the context has ``run_dirs(key) -> list[Path]`` /
``analysis_dirs(name) -> list[Path]`` (one folder per seed, same test points), every seed is
used; otherwise the single ``run_dir`` / ``analysis_dir``.

Differences of accuracies between two models are paired over test points when the harness
wrote per-point scores (``examples.parquet``); when only counts were recorded, the values are
rebuilt from counts (:meth:`Points.from_counts`) and comparisons with them are unpaired.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from analysis.naming import file_slug
from analysis.studies.spec import StudyContext
from analysis.studies.values import Features, Points, PoolingModel, RunPoints, round4
from evalkit.errors import EvalkitError


def _json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def seed_run_dirs(ctx: StudyContext, key: str) -> list[Path]:
    fn = getattr(ctx, "run_dirs", None)
    return [Path(p) for p in fn(key)] if callable(fn) else [ctx.run_dir(key)]


def seed_analysis_dirs(ctx: StudyContext, name: str) -> list[Path]:
    fn = getattr(ctx, "analysis_dirs", None)
    return [Path(p) for p in fn(name)] if callable(fn) else [ctx.analysis_dir(name)]


def worst_case(summary: dict[str, Any]) -> float:
    """Worst-case robust accuracy at the study's (first) eps."""
    return float(summary["worst_case"][0]["robust_accuracy"])


def _one_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, np.ndarray] | None]:
    """(counts, per-point columns or None) of one harness run at its first eps.

    Per point, the harness's robust *score* (``<id>@<eps>:score``, ``worst@<eps>:score``,
    ``clean_p``: P(correct), 0/1 for deterministic models) is used when present, else the 0/1
    ``:robust`` / ``clean_correct`` columns of older runs. Counts are ``accuracy * n`` (the mean
    score, which may be fractional for randomized models)."""
    summary = _json(run_dir / "summary.json")
    eps = summary["worst_case"][0]["eps"]
    n = int(summary["n_examples"])
    counts = {
        "n": n,
        "clean": float(summary["clean_accuracy"]) * n,
        "worst": float(summary["worst_case"][0]["robust_accuracy"]) * n,
        "attacks": {
            str(r["attack"]): float(r["robust_accuracy"]) * n
            for r in summary["results"]
            if r["eps"] == eps and not r.get("probe", False)
        },
    }
    path = run_dir / "examples.parquet"
    if not path.exists():
        return counts, None
    import pandas as pd

    df = pd.read_parquet(path)
    if "index" not in df.columns:
        return counts, None
    df = df.sort_values("index", kind="stable")

    def col(prefix: str, old: str) -> str | None:
        for c in (f"{prefix}:score", f"{prefix}:robust", old):
            if c in df.columns:
                return c
        return None

    clean = "clean_p" if "clean_p" in df.columns else col("clean", "clean_correct")
    worst = col(f"worst@{eps}", f"worst@{eps}:robust")
    attacks = {a: col(f"{a}@{eps}", f"{a}@{eps}:robust") for a in counts["attacks"]}
    if clean is None or worst is None or any(c is None for c in attacks.values()):
        return counts, None
    points = {
        "index": df["index"].to_numpy(),
        "clean": df[clean].to_numpy(dtype=float),
        "worst": df[worst].to_numpy(dtype=float),
        **{f"attack:{a}": df[c].to_numpy(dtype=float) for a, c in attacks.items()},
    }
    return counts, points


def load_run_points(run_dirs: Sequence[Path]) -> RunPoints:
    """:class:`RunPoints` from one harness run folder per seed (per-point when every seed has
    ``examples.parquet`` on the same test points, else from the counts in ``summary.json``)."""
    loaded = [_one_run(Path(d)) for d in run_dirs]
    if not loaded:
        raise EvalkitError("no run folders to judge")
    counts = [c for c, _ in loaded]
    points = [p for _, p in loaded]
    attacks = list(counts[0]["attacks"])
    if all(p is not None for p in points) and all(
        np.array_equal(p["index"], points[0]["index"])
        for p in points  # type: ignore[index]
    ):
        idx = points[0]["index"]  # type: ignore[index]

        def stack(key: str) -> Points:
            return Points(np.stack([p[key] for p in points]), idx, True)  # type: ignore[index]

        return RunPoints(stack("clean"), stack("worst"), {a: stack(f"attack:{a}") for a in attacks})
    n = counts[0]["n"]
    if any(c["n"] != n for c in counts):
        raise EvalkitError("seeds of one model were evaluated on different numbers of points")
    return RunPoints(
        Points.from_counts([c["clean"] for c in counts], n),
        Points.from_counts([c["worst"] for c in counts], n),
        {a: Points.from_counts([c["attacks"].get(a, 0) for c in counts], n) for a in attacks},
    )


def load_features(
    analysis_dirs: Sequence[Path], labels: Sequence[str]
) -> tuple[dict[str, list[Features]], float]:
    """Per label, one :class:`Features` per seed folder (``features_<label>.npz``), and the
    activation threshold the study used."""
    feats: dict[str, list[Features]] = {lab: [] for lab in labels}
    threshold = 0.01
    for d in analysis_dirs:
        doc = _json(Path(d) / "analysis.json")
        threshold = float(doc.get("params", {}).get("threshold", threshold))
        for lab in labels:
            path = Path(d) / f"features_{file_slug(lab)}.npz"
            if not path.exists():
                raise EvalkitError(f"{path} is missing; rerun the channels study")
            with np.load(path) as z:
                feats[lab].append(Features(z["natural"], z["adversarial"]))
    return feats, threshold


def _sap_points(d: Path) -> tuple[Any, int, Any]:
    import pandas as pd

    doc = _json(d / "analysis.json")
    n = int(doc.get("params", {}).get("n_examples", 0))
    table = pd.read_csv(d / "sap_eot.csv")
    pts = d / "sap_eot_points.parquet"
    return table, n, (pd.read_parquet(pts) if pts.exists() else None)


def _dense_eot(std: Any, eps: float) -> int:
    rows = std[(std["model"] == "dense") & (std["eps"] == eps)]
    return int(rows["eot"].min())


def _sap_pick(loaded: list[tuple[Any, int, Any]], model: str, eps: float, eot: int) -> Points:
    """One model's robustness at (eps, eot) on the standard checkpoint over the seeds: per point
    when every seed wrote points on the same test points, else from the counts."""
    rows, per_point = [], []
    for table, n, pts in loaded:
        sel = (
            (table["checkpoint"] == "std")
            & (table["model"] == model)
            & (table["eps"] == eps)
            & (table["eot"] == eot)
        )
        acc = float(table.loc[sel, "robust_accuracy"].iloc[0])
        rows.append((round(acc * n), n))
        if pts is not None:
            s = (
                (pts["checkpoint"] == "std")
                & (pts["model"] == model)
                & (pts["eps"] == eps)
                & (pts["eot"] == eot)
            )
            sub = pts.loc[s].sort_values("index")
            per_point.append((sub["index"].to_numpy(), sub["correct"].to_numpy(dtype=float)))
    if len(per_point) == len(loaded) and all(
        np.array_equal(i, per_point[0][0]) for i, _ in per_point
    ):
        return Points(np.stack([v for _, v in per_point]), per_point[0][0], True)
    return Points.from_counts([k for k, _ in rows], rows[0][1])


@dataclass
class SapPoints:
    """What the SAP judge compares, on the standard-trained checkpoint at the smallest eps of
    the sweep: the dense model, SAP per EOT count, and the other budgets' accuracies (shown)."""

    dense: Points
    sap: dict[int, Points]
    eps: float
    extra: dict[str, Any]


def load_sap_points(analysis_dirs: Sequence[Path]) -> SapPoints:
    """:class:`SapPoints` from one ``sap-eot`` analysis folder per seed (``sap_eot.csv`` and,
    when present, ``sap_eot_points.parquet``). The smallest eps: at larger budgets the dense
    model is at 0% and SAP cannot look robust at all."""
    loaded = [_sap_points(Path(d)) for d in analysis_dirs]
    std0 = loaded[0][0][loaded[0][0]["checkpoint"] == "std"]
    eps = float(std0["eps"].min())
    eots = sorted(int(e) for e in std0.loc[std0["model"] == "sap", "eot"].unique())
    extra: dict[str, Any] = {}
    for e in sorted(set(std0["eps"]) - {eps}):
        rows = std0[std0["eps"] == e]
        extra[f"eps{e:g}_dense"] = round4(rows[rows["model"] == "dense"]["robust_accuracy"].iloc[0])
        sap_e = rows[rows["model"] == "sap"].set_index("eot")["robust_accuracy"]
        extra[f"eps{e:g}_sap_eot{eots[0]}"] = round4(sap_e.loc[eots[0]])
        extra[f"eps{e:g}_sap_eot{eots[-1]}"] = round4(sap_e.loc[eots[-1]])
    return SapPoints(
        _sap_pick(loaded, "dense", eps, _dense_eot(std0, eps)),
        {e: _sap_pick(loaded, "sap", eps, e) for e in eots},
        eps,
        extra,
    )


def load_pooling_models(
    analysis_dirs: Sequence[Path],
) -> tuple[dict[str, PoolingModel], dict[str, list[dict[str, Any]]]]:
    """Per model label, its :class:`PoolingModel` over the seeds and its ``analysis.json``
    scalars per seed. Reads the scalars (robust accuracy, n) and, when present, per-model
    ``points_<label>.npz`` (keys ``index``, ``robust``, ``clean``, ``change_rel``)."""
    dirs = [Path(d) for d in analysis_dirs]
    docs = [_json(d / "analysis.json") for d in dirs]
    labels = list(docs[0]["scalars"])
    models: dict[str, PoolingModel] = {}
    for lab in labels:
        rows = [doc["scalars"][lab] for doc in docs]
        ns = [int(doc.get("params", {}).get("n_examples", 0)) for doc in docs]
        arrays = []
        for d in dirs:
            p = d / f"points_{file_slug(lab)}.npz"
            arrays.append(dict(np.load(p)) if p.exists() else None)
        if all(a is not None and "robust" in a for a in arrays):
            idx = arrays[0].get("index")  # type: ignore[union-attr]
            robust = Points(np.stack([a["robust"] for a in arrays]), idx, True)  # type: ignore[index]
        else:
            robust = Points.from_counts(
                [round(r["robust_accuracy"] * n) for r, n in zip(rows, ns)], ns[0]
            )
        change = None
        if all(a is not None and "change_rel" in a for a in arrays):
            change = np.stack([a["change_rel"] for a in arrays])  # type: ignore[index]
        models[lab] = PoolingModel(
            rows[0]["pool"], float(rows[0]["map_size"]), robust, None, change
        )
    per_label = {lab: [doc["scalars"][lab] for doc in docs] for lab in labels}
    return models, per_label


__all__ = [
    "SapPoints",
    "load_features",
    "load_pooling_models",
    "load_run_points",
    "load_sap_points",
    "seed_analysis_dirs",
    "seed_run_dirs",
    "worst_case",
]
