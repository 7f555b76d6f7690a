"""Report content: real run directories from the harness render into tables holding exactly the
numbers of their summary.json, flags are shown, inputs are embedded, and user mistakes give
one-line errors."""

from __future__ import annotations

import builtins
import html as htmllib
import json
import re
import sys
from pathlib import Path

import pytest
import torch
from helpers import one_thread
from test_report_fixtures import (
    make_analysis_dir,
    make_real_run,
    make_run_dir,
    make_summary,
    pct,
    pct_ci,
    tables,
)

from evalkit.cli import main as cli_main
from evalkit.errors import EvalkitError


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two real run directories: a plain model and the same recipe with SAP (raises a flag)."""
    root = tmp_path_factory.mktemp("real")
    with one_thread():
        return [
            make_real_run(root, "plain"),
            make_real_run(root, "sap", defense="sap", folder="m2"),
        ]


@pytest.fixture(scope="module")
def real_report(real_runs: list[Path], tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("rep") / "report.html"
    assert cli_main(["report", *map(str, real_runs), "-o", str(out)]) == 0
    return out.read_text(encoding="utf-8")


PROBE_TAG = "sanity probe · counted in worst case"


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_robust_tables_hold_summary_numbers(real_runs: list[Path], real_report: str) -> None:
    robust_tables = tables(real_report, "robust-table")
    assert len(robust_tables) == len(real_runs)
    for run, rows in zip(real_runs, robust_tables):
        s = _summary(run)
        header, body = rows[0], {r[0].removesuffix(PROBE_TAG).strip(): r[1:] for r in rows[1:]}
        eps_cols = [h.removeprefix("eps ") for h in header[1:]]
        assert sorted(eps_cols) == sorted({r["eps"] for r in s["results"]})
        for r in s["results"]:
            cell = body[r["attack"]][eps_cols.index(r["eps"])]
            assert cell == pct_ci(r["robust_accuracy"], r["robust_accuracy_ci"])
        worst = next(v for k, v in body.items() if k.startswith("worst case"))
        for w in s["worst_case"]:
            cell = worst[eps_cols.index(w["eps"])]
            assert cell == pct_ci(w["robust_accuracy"], w["robust_accuracy_ci"])
            low, high = w["robust_accuracy_ci"]
            assert low <= w["robust_accuracy"] <= high
        clean_ci = pct_ci(s["clean_accuracy"], s["clean_accuracy_ci"]).split(" ", 1)[1]
        assert f"clean accuracy <strong>{pct(s['clean_accuracy'])}%</strong> " in real_report
        assert f'<span class="ci">{clean_ci}</span>' in real_report


def test_per_class_table_matches_summary(real_runs: list[Path], real_report: str) -> None:
    for run, rows in zip(real_runs, tables(real_report, "per-class-table")):
        s = _summary(run)
        last_eps = s["worst_case"][-1]["eps"]
        body = rows[1:]
        assert len(body) == len(s["per_class"])
        for row, entry in zip(body, s["per_class"]):
            assert row[0] == entry["name"]
            assert row[1] == str(entry["n"])
            assert row[2] == pct_ci(entry["clean_accuracy"], entry["clean_accuracy_ci"])
            assert row[3] == pct_ci(
                entry["robust_accuracy"][last_eps], entry["robust_accuracy_ci"][last_eps]
            )


def test_leaderboard_sorted_by_worst_case(real_runs: list[Path], real_report: str) -> None:
    board = tables_by_id(real_report)
    header, body = board[0], board[1:]
    col = header.index("worst @ 8/255")
    expected = sorted(
        (_summary(r) for r in real_runs), key=lambda s: -s["worst_case"][-1]["robust_accuracy"]
    )
    assert [row[col] for row in body] == [
        pct_ci(s["worst_case"][-1]["robust_accuracy"], s["worst_case"][-1]["robust_accuracy_ci"])
        for s in expected
    ]
    values = [float(row[col].split()[0]) for row in body]
    assert values == sorted(values, reverse=True)


def tables_by_id(html: str) -> list[list[str]]:
    """The leaderboard table (found by id, since it carries no class)."""
    start = html.index('<table id="leaderboard-table">')
    end = html.index("</table>", start) + len("</table>")
    (rows,) = tables(html[start:end].replace('id="leaderboard-table"', 'class="lb"'), "lb")
    return rows


def test_flags_are_shown(real_runs: list[Path], real_report: str) -> None:
    text = htmllib.unescape(real_report)
    flags = [f for run in real_runs for f in _summary(run)["flags"]]
    assert flags, "the SAP run must raise at least the randomness flag"
    assert any(f["id"] == "randomness_detected" for f in flags)
    for f in flags:
        assert f["message"] in text
        assert f"({f['id']})" in text
    assert f"Sanity checks raised {len(flags)} flag" in text
    # the summary box sits before the first run section, so flags are seen first
    assert real_report.index('id="flags-summary"') < real_report.index('class="run"')


def test_protocol_cost_environment_and_model_card(real_runs: list[Path], real_report: str) -> None:
    text = htmllib.unescape(real_report)
    s = _summary(real_runs[0])
    assert "Protocol actually run" in text
    assert f"<strong>{s['protocol']['preset']}</strong>" in real_report
    for plan in s["protocol"]["attacks"]:
        assert plan["description"] in text
    assert f"{s['cost']['forward_passes']:,}" in text
    assert s["environment"]["torch"] in text
    assert s["model"]["path"] in text
    assert "Training history" in text  # the checkpoint's history was plotted
    assert "adaptive additions" in text  # the SAP run adds EOT


def test_report_is_self_contained(real_report: str) -> None:
    refs = re.findall(r'(?:src|href)="([^"]*)"', real_report)
    assert refs and all(r.startswith(("data:", "#")) for r in refs), refs
    assert "<script" not in real_report.lower()
    assert "http://" not in real_report and "https://" not in real_report
    assert "Content-Security-Policy" in real_report


def test_fixture_with_several_eps_and_missing_keys(tmp_path: Path) -> None:
    full = make_run_dir(tmp_path / "full", make_summary(eps=("2/255", "4/255", "8/255")))
    bare = make_run_dir(
        tmp_path / "bare",
        {
            "n_examples": 10,
            "clean_accuracy": 0.5,
            "results": [{"attack": "pgd-20", "eps": 0.0313725490, "robust_accuracy": 0.2}],
        },
    )
    out = tmp_path / "r.html"
    assert cli_main(["report", str(full), str(bare), "-o", str(out), "--title", "T"]) == 0
    html = out.read_text()
    rows = tables(html, "robust-table")
    assert rows[0][0] == ["attack", "eps 2/255", "eps 4/255", "eps 8/255"]
    # a run without worst_case gets it derived (minimum over attacks), marked by the same number
    # (no interval: a schema-1 run records neither intervals nor its scoring)
    assert rows[1][-1] == ["worst case (per example, all attacks)", "20.00"]
    assert "not recorded" in html  # cost/environment missing
    # no per_class in the summary: it falls back to examples.parquet (label, clean_correct)
    pc = tables(html, "per-class-table")[-1]
    # its intervals are computed from the per-example outcomes (Clopper-Pearson, 1 of 2, 2 of 2)
    assert pc[1:] == [
        ["0", "2", "50.00 [1.3, 98.7]", "—"],
        ["1", "2", "100.00 [15.8, 100.0]", "—"],
    ]


def test_analysis_plots_and_findings_are_embedded(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "run", make_summary())
    analysis = make_analysis_dir(tmp_path / "an" / "channels", finding="CAS suppresses channels")
    out = tmp_path / "r.html"
    assert cli_main(["report", str(run), "--analysis", str(analysis), "-o", str(out)]) == 0
    html = out.read_text()
    import base64

    png = base64.b64encode((analysis / "magnitude_std.png").read_bytes()).decode()
    assert html.count(png) == 1  # embedded once: the '../outside.png' entry is refused
    assert "must not be embedded" not in html
    assert "CAS suppresses channels" in html
    (matrix,) = tables(html, "analysis-matrix")
    assert matrix[0] == ["scalar", "std", "at"]
    assert ["mean_magnitude_natural", "0.41", "0.44"] in matrix


def test_pdf_written(tmp_path: Path) -> None:
    pytest.importorskip("weasyprint", reason="WeasyPrint not installed")
    run = make_run_dir(tmp_path / "run", make_summary())
    out, pdf = tmp_path / "r.html", tmp_path / "r.pdf"
    assert cli_main(["report", str(run), "-o", str(out), "--pdf", str(pdf)]) == 0
    assert pdf.read_bytes()[:5] == b"%PDF-"


@pytest.mark.parametrize("case", ["missing", "no-summary", "bad-json"])
def test_user_mistakes_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture, case: str
) -> None:
    target = tmp_path / "run"
    if case != "missing":
        target.mkdir()
    if case == "bad-json":
        (target / "summary.json").write_text("{not json")
    rc = cli_main(["report", str(target), "-o", str(tmp_path / "r.html")])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and "evalkit report: error:" in err and "(" in err


def test_missing_pango_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    from reports import pdf

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "weasyprint":
            raise OSError(
                "cannot load library 'libpango-1.0-0': libpango-1.0-0: cannot open shared object file"
            )
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "weasyprint", raising=False)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(EvalkitError, match=r"libpango-1\.0-0.*apt-get install libpango-1\.0-0"):
        pdf.html_to_pdf("<p>x</p>", "/tmp/never.pdf")
    monkeypatch.setattr(builtins, "__import__", real_import)
    monkeypatch.setitem(sys.modules, "weasyprint", None)  # not installed at all
    with pytest.raises(EvalkitError, match=r"pip install"):
        pdf.html_to_pdf("<p>x</p>", "/tmp/never.pdf")


@pytest.mark.parametrize(
    ("eps", "shown"),
    [
        (8 / 255, "8/255"),
        ("8/255", "8/255"),
        ("0.5/255", "0.001961"),
        (0.1, "0.1"),
        (0, "0"),
        ("x", "x"),
    ],
)
def test_eps_labels(eps: object, shown: str) -> None:
    from reports.runs import fmt_eps

    assert fmt_eps(eps) == shown


# --------------------------------------------------------------------------- schema 2: scoring


class NoisyCentroid(torch.nn.Module):
    """Nearest-class-mean classifier on raw pixels: logits ``0.2 (2 f.c_k - |c_k|^2)`` for
    flattened images ``f`` (N, 784) and class means ``c_k``; with ``sigma > 0`` every forward
    pass adds N(0, sigma^2) noise to the logits, so points near a decision boundary are correct
    on some draws only (a randomized model by construction, like dropout left on)."""

    def __init__(self, centroids: torch.Tensor, sigma: float) -> None:
        super().__init__()
        self.register_buffer("c", centroids)
        self.sigma = sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = x.flatten(1)
        logits = 0.2 * (2 * f @ self.c.T - (self.c**2).sum(1))
        return logits + self.sigma * torch.randn_like(logits) if self.sigma else logits


@pytest.fixture(scope="module")
def scored_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Run directories written by ``evalkit.evaluate``: the same centroid classifier without
    noise (exact scoring), with noise (Monte Carlo, 10 draws, preset ``fast``: a Square probe
    runs), and with noise under an explicit attack list (adaptive AutoAttack left out)."""
    from evalkit.data import load_split
    from evalkit.evaluation import evaluate

    root = tmp_path_factory.mktemp("scored")
    train = load_split("fashion-mnist-mini", "train").first(2000)
    xt, yt = train.float_batch(slice(None)).flatten(1), train.y
    centroids = torch.stack([xt[yt == k].mean(0) for k in range(10)])
    test = load_split("fashion-mnist-mini", "test").first(48)
    data = (test.float_batch(slice(None)), test.y)
    common = dict(eps=["2/255", "8/255"], device="cpu", progress=False, echo=False, seed=1)
    runs = {}
    with one_thread():
        for name, sigma, attacks in (
            ("exact", 0.0, None),
            ("mc", 1.0, None),
            ("mc-explicit", 1.0, ["fgsm", "pgd"]),
        ):
            runs[name] = root / name
            evaluate(
                NoisyCentroid(centroids, sigma),
                data,
                preset="fast",
                attacks=attacks,
                mc_draws=10,
                eot=2,
                out=runs[name],
                **common,
            )
    return runs


@pytest.fixture(scope="module")
def scored_report(scored_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("scored-rep") / "report.html"
    assert cli_main(["report", *map(str, scored_runs.values()), "-o", str(out)]) == 0
    return out.read_text(encoding="utf-8")


def section(html: str, anchor: str) -> str:
    """The HTML of one run's section (from its id to the next section)."""
    start = html.index(f'id="{anchor}"')
    end = html.find("<section", start)
    return html[start : end if end > 0 else len(html)]


def text_of(fragment: str) -> str:
    """Visible text with tags dropped (inline ones without a gap) and whitespace collapsed."""
    inline = re.sub(r"</?(?:strong|span|code|em|a)\b[^>]*>", "", fragment)
    return " ".join(htmllib.unescape(re.sub(r"<[^>]+>", " ", inline)).split())


def test_both_scoring_semantics_are_shown(scored_runs: dict[str, Path], scored_report: str):
    exact, mc = _summary(scored_runs["exact"]), _summary(scored_runs["mc"])
    assert exact["schema_version"] == 2 and exact["scoring"]["semantics"] == "exact"
    assert mc["scoring"] == {**mc["scoring"], "semantics": "monte-carlo", "draws": 10}
    exact_text = text_of(section(scored_report, "run-exact"))
    mc_text = text_of(section(scored_report, "run-mc"))
    assert "scoring: exact (deterministic, one pass per candidate)" in exact_text
    assert exact["scoring"]["description"] in exact_text
    assert "scoring: Monte Carlo · 10 draws per candidate" in mc_text
    assert mc["scoring"]["description"] in mc_text
    assert "Monte Carlo" not in exact_text.split("Protocol actually run")[0]
    board = tables_by_id(scored_report)
    col = board[0].index("scoring")
    assert {row[2]: row[col] for row in board[1:]} == {
        "exact": "exact",
        "mc": "Monte Carlo (10 draws)",
        "mc-explicit": "Monte Carlo (10 draws)",
    }


def test_monte_carlo_numbers_equal_the_summary(scored_runs: dict[str, Path], scored_report: str):
    s = _summary(scored_runs["mc"])
    # the model really is random: the mean over draws and "all draws" differ
    assert s["clean_accuracy_all_draws"] < s["clean_accuracy"] and s["clean_mc_std_error"] > 0
    html = section(scored_report, "run-mc")
    head = s["worst_case"][-1]
    assert (
        text_of(html).count(
            f"clean accuracy {pct_ci(s['clean_accuracy'], s['clean_accuracy_ci']).replace(' ', '% ', 1)}"
            f" (mean over 10 draws, Monte-Carlo s.e. "
            f"{pct(s['clean_mc_std_error'])}; correct on all draws {pct(s['clean_accuracy_all_draws'])}%)"
            f" · worst-case robust accuracy "
            f"{pct_ci(head['robust_accuracy'], head['robust_accuracy_ci']).replace(' ', '% ', 1)}"
            " (Monte-Carlo s.e. "
            f"{pct(head['mc_std_error'])}; correct on all draws "
            f"{pct(head['robust_accuracy_all_draws'])}%) at eps 8/255"
        )
        == 1
    )
    (worst,) = tables(html, "worst-table")

    def bounds(ci: list[float]) -> str:
        return pct_ci(0, ci).split(" ", 1)[1]

    assert worst[1:] == [
        [
            w["eps"],
            pct(w["robust_accuracy"]),
            bounds(w["robust_accuracy_ci"]),
            pct(w["mc_std_error"]),
            pct(w["robust_accuracy_all_draws"]),
            str(w["n_robust"]),
        ]
        for w in s["worst_case"]
    ] + [
        [
            "clean",
            pct(s["clean_accuracy"]),
            bounds(s["clean_accuracy_ci"]),
            pct(s["clean_mc_std_error"]),
            pct(s["clean_accuracy_all_draws"]),
            str(s["n_clean_correct"]),
        ]
    ]
    assert s["intervals"]["method"] == "clopper-pearson-effective-n"
    (robust,) = tables(html, "robust-table")
    all_draws = next(r for r in robust if r[0].startswith("correct on all 10 draws"))
    assert all_draws[1:] == [pct(w["robust_accuracy_all_draws"]) for w in s["worst_case"]]


def test_exact_run_says_exact(scored_runs: dict[str, Path], scored_report: str) -> None:
    s = _summary(scored_runs["exact"])
    html = section(scored_report, "run-exact")
    (worst,) = tables(html, "worst-table")
    assert s["intervals"]["method"] == "clopper-pearson"
    for row, w in zip(worst[1:], s["worst_case"]):
        assert row == [
            w["eps"],
            pct(w["robust_accuracy"]),
            pct_ci(0, w["robust_accuracy_ci"]).split(" ", 1)[1],
            "exact",
            pct(w["robust_accuracy_all_draws"]),
            str(w["n_robust"]),
        ]
    (robust,) = tables(html, "robust-table")
    assert not any(r[0].startswith("correct on all") for r in robust)
    assert "(mean over" not in text_of(html)


def test_probe_rows_are_marked_and_broken_by_matches(
    scored_runs: dict[str, Path], scored_report: str
) -> None:
    s = _summary(scored_runs["mc"])
    probes = {r["attack"] for r in s["results"] if r.get("probe")}
    assert probes, "preset fast on 48 points must leave budget for the Square sanity probe"
    html = section(scored_report, "run-mc")
    (robust,) = tables(html, "robust-table")
    marked = {r[0].removesuffix(PROBE_TAG).strip() for r in robust if r[0].endswith(PROBE_TAG)}
    assert marked == probes
    assert any(r[0] == "worst case (per example, all attacks, probes included)" for r in robust)
    (broken,) = tables(html, "broken-by-table")
    header = [h.removesuffix(" (probe)") for h in broken[0]]
    assert header[0] == "eps" and header[-2:] == ["robust", "total"]
    sources = header[1:-2]
    assert sources[0] == "clean" and set(sources) == {
        k for w in s["worst_case"] for k in w["broken_by"]
    }
    for p in probes & set(sources):
        assert f"{p} (probe)" in broken[0]
    for row, w in zip(broken[1:], s["worst_case"]):
        assert row[0] == w["eps"]
        assert row[1:-2] == [str(w["broken_by"].get(src, 0)) for src in sources]
        assert row[-2] == str(w["n_robust"])
        assert row[-1] == str(s["n_examples"])  # every point is robust or broken by one source


def test_cost_split_and_sanity_share(scored_runs: dict[str, Path], scored_report: str) -> None:
    s = _summary(scored_runs["mc"])
    html = section(scored_report, "run-mc")
    (cost,) = tables(html, "cost-table")
    parts = ("clean", "protocol", "sanity_probes", "sanity")
    assert [r[1:3] for r in cost[1:]] == [
        [f"{s['cost'][p]['forward_passes']:,}", f"{s['cost'][p]['backward_passes']:,}"]
        for p in parts
    ]
    assert cost[1][3] == f"{s['cost']['clean']['time_s']:.1f} s"
    sanity = s["cost"]["sanity"]
    assert sanity["limit_share"] == 0.25
    assert (
        f"Sanity checks spent {sanity['propagations']:,} propagations = "
        f"{100 * sanity['share_of_protocol']:.1f}% of the protocol's attack propagations "
        f"(limit 25%, budget {sanity['budget']:,})"
    ) in text_of(html)


def test_fingerprints_in_the_model_card(scored_runs: dict[str, Path], scored_report: str) -> None:
    for name, run in scored_runs.items():
        prints = _summary(run)["fingerprints"]
        (card,) = tables(section(scored_report, f"run-{name}"), "fingerprints")
        shown = dict(row for row in card[1:])
        assert shown["model_sha256"] == prints["model_sha256"][:12]
        assert shown["data_sha256"] == prints["data_sha256"][:12]
        assert prints["checkpoint_sha256"] is None and shown["checkpoint_sha256"] == "—"
        assert f'title="{prints["model_sha256"]}"' in scored_report


def test_adaptive_left_out_and_autoattack_details(
    scored_runs: dict[str, Path], scored_report: str
) -> None:
    s = _summary(scored_runs["mc-explicit"])
    left = [a for a in s["adaptive"] if a.get("left_out")]
    assert left, "an explicit attack list on a randomized model leaves out AutoAttack rand"
    html = section(scored_report, "run-mc-explicit")
    (table,) = tables(html, "adaptive-table")
    assert table[1][:4] == ["addition", "why", "attacks it changed or added", "left out"]
    rows = {r[0]: r for r in table[2:]}
    for a in s["adaptive"]:
        assert rows[a["name"]][1] == a["reason"]
        assert rows[a["name"]][2] == (", ".join(a["attacks"]) or "—")
        assert rows[a["name"]][3] == (", ".join(a.get("left_out") or []) or "—")
    flag = next(f for f in s["flags"] if f["id"] == "adaptive_attack_left_out")
    top = scored_report[: scored_report.index('class="run"')]
    assert flag["message"] in text_of(top)
    # AutoAttack's record of what ran (with its EOT iterations) is in the details table
    mc = _summary(scored_runs["mc"])
    aa = next(r for r in mc["results"] if r["attack"].startswith("autoattack"))
    records = text_of(section(scored_report, "run-mc").split('class="attack-records"')[1])
    line = records.split(f"{aa['attack']} @ {aa['eps']}: ")[1].split(" @ ")[0]
    assert f"ran: {', '.join(aa['details']['ran'])}" in line
    assert (
        "eot_iter: " + ", ".join(f"{k} {v}" for k, v in aa["details"]["eot_iter"].items()) in line
    )


def test_per_class_fallback_uses_monte_carlo_scores(
    scored_runs: dict[str, Path], tmp_path: Path
) -> None:
    """Without ``per_class`` in summary.json the table comes from examples.parquet's ``clean_p``
    and ``worst@EPS:score`` and must equal the harness's own per-class numbers."""
    import shutil

    s = _summary(scored_runs["mc"])
    copy = tmp_path / "mc-copy"
    shutil.copytree(scored_runs["mc"], copy)
    reduced = {k: v for k, v in s.items() if k != "per_class"}
    (copy / "summary.json").write_text(json.dumps(reduced))
    out = tmp_path / "r.html"
    assert cli_main(["report", str(copy), "-o", str(out)]) == 0
    (pc,) = tables(out.read_text(), "per-class-table")
    expected = [
        [
            str(e["class"]),
            str(e["n"]),
            pct_ci(e["clean_accuracy"], e["clean_accuracy_ci"]),
            pct_ci(e["robust_accuracy"]["8/255"], e["robust_accuracy_ci"]["8/255"]),
        ]
        for e in s["per_class"]
        if e["n"]
    ]
    assert pc[1:] == expected


def test_schema1_run_shows_missing_values_as_dashes(tmp_path: Path) -> None:
    run = make_run_dir(tmp_path / "old", make_summary())
    out = tmp_path / "r.html"
    assert cli_main(["report", str(run), "-o", str(out)]) == 0
    html = out.read_text()
    text = text_of(html)
    assert "scoring: — not recorded (run directory of summary schema 1" in text
    (worst,) = tables(html, "worst-table")
    assert worst[1] == ["4/255", pct(0.63 - 0.01), "—", "—", "—", "—"]
    assert "First broken by: — (not recorded" in text
    assert tables(html, "fingerprints")[0][1:] == [["—"]]
    assert "Sanity-check cost: — (not recorded)." in text
    assert "No adaptive additions were run." in text


# --------------------------------------------------------------------------- analysis folders


def test_analysis_tables_embedded_when_small(tmp_path: Path) -> None:
    import pandas as pd

    folder = make_analysis_dir(tmp_path / "an" / "channels")
    doc = json.loads((folder / "analysis.json").read_text())
    pd.DataFrame({"model": ["std", "at"], "entropy": [0.98765, 0.5]}).to_csv(
        folder / "small.csv", index=False
    )
    pd.DataFrame({"channel": range(500)}).to_csv(folder / "big.csv", index=False)
    (tmp_path / "an" / "leak.csv").write_text("secret\n42\n")
    doc["files"]["tables"] = [
        {"name": "small", "csv": "small.csv", "description": "two rows"},
        {"name": "big", "csv": "big.csv"},
        {"name": "leak", "csv": "../leak.csv"},
    ]
    (folder / "analysis.json").write_text(json.dumps(doc))
    from reports import build_report

    html = build_report([], tmp_path / "r.html", analysis_dirs=[folder])["html"].read_text()
    (small,) = tables(html, "table-small")
    assert small[1:] == [["model", "entropy"], ["std", "0.9877"], ["at", "0.5"]]
    assert "500 rows x 1 columns, not embedded" in html and not tables(html, "table-big")
    assert "leak" not in html and "secret" not in html


def test_distributions_analysis_is_registered_and_rendered(tmp_path: Path) -> None:
    import base64

    import pandas as pd

    from evalkit.analyses import analyze, available_analyses
    from evalkit.data import load_split
    from evalkit.models import build_model

    assert "distributions" in available_analyses()
    split = load_split("fashion-mnist-mini", "test").first(8)
    data = (split.float_batch(slice(None)), split.y)
    torch.manual_seed(0)
    models = {
        name: build_model("smallcnn", num_classes=10, in_channels=1, width=4) for name in ("a", "b")
    }
    with one_thread():
        res = analyze(
            models,
            analysis="distributions",
            data=data,
            eps="8/255",
            out=tmp_path / "dist",
            device="cpu",
            progress=False,
            layer="layer3,layer4",
            steps=1,
            max_values=300,
        )
    assert res.doc["study"] == "distributions"
    assert res.doc["params"]["layers"] == {"a": ["layer3", "layer4"], "b": ["layer3", "layer4"]}
    assert set(res.value.summary["kind"]) == {"natural", "adversarial"}
    from reports import build_report

    html = build_report([], tmp_path / "r.html", analysis_dirs=[res.out])["html"].read_text()
    block = section(html, "analysis-distributions")
    for fig in ("ecdf", "violin"):
        png = base64.b64encode((res.out / f"{fig}.png").read_bytes()).decode()
        assert png in block
    assert "layers analysed: a: layer3, layer4; b: layer3, layer4" in text_of(block)
    (summary,) = tables(block, "table-distribution_summary")
    csv = pd.read_csv(res.out / "distribution_summary.csv")
    assert summary[1] == list(csv.columns)
    assert [r[:4] for r in summary[2:]] == csv[["model", "layer", "kind", "stat"]].values.tolist()
    assert [r[6] for r in summary[2:]] == [f"{v:.4g}" for v in csv["mean"]]
    (grouped,) = tables(block, "analysis-grouped")
    assert [r[:2] for r in grouped[1:]] == [
        ["a", "layer3"],
        ["a", "layer4"],
        ["b", "layer3"],
        ["b", "layer4"],
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"steps": 0}, "steps must be a positive integer"),
        ({"max_values": 0}, "max_values must be a positive integer"),
        ({"layer": "layer3", "layers": ["layer4"]}, "give the layers once"),
        ({"layer": "layer9"}, "layer9"),
        ({"threshold": 0.1}, "has no option 'threshold'"),
    ],
)
def test_distributions_options_are_checked(tmp_path: Path, options: dict, message: str) -> None:
    from evalkit.analyses import analyze
    from evalkit.models import build_model

    x = torch.rand(2, 1, 28, 28)
    model = build_model("smallcnn", num_classes=10, in_channels=1, width=4)
    with pytest.raises(EvalkitError, match=message):
        analyze(
            {"m": model},
            analysis="distributions",
            data=(x, torch.tensor([0, 1])),
            out=tmp_path,
            device="cpu",
            progress=False,
            **options,
        )


def test_uninformative_plots_are_replaced() -> None:
    """A one-epoch history is a table, not dots on a flat axis; a channel-count panel where the
    median channel is active on (nearly) every image states its numbers instead of a flat bar."""
    import pandas as pd

    from analysis.plots import channel_comparison, frequency_saturated
    from reports.plots import history_plot, history_single

    one = [{"epoch": 1, "train_loss": 0.5, "train_acc": 0.8}]
    assert history_plot(one) is None and ("train_acc", "0.8") in history_single(one)
    two = [*one, {"epoch": 2, "train_loss": 0.4, "train_acc": 0.85}]
    assert history_plot(two) is not None and history_single(two) == []

    def channels(model: str, counts: list[int]) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "model": model,
                "count_natural": counts,
                "count_adversarial": counts,
                "magnitude_natural": [0.5] * len(counts),
                "magnitude_adversarial": [0.4] * len(counts),
            }
        )

    flat, varied = channels("flat", [200] * 60 + [190] * 4), channels("cas", list(range(100, 164)))
    assert frequency_saturated(flat, 200) and not frequency_saturated(varied, 200)
    fig = channel_comparison(pd.concat([flat, varied]), "magnitude", sort="natural", n_examples=200)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("flat at the maximum" in t and "200" in t for t in texts)
    assert fig.axes[2].axison is False and fig.axes[3].axison is True  # flat panel replaced
    assert fig.get_size_inches()[0] <= 7.2  # printed at full size, fonts as drawn
