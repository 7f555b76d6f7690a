"""The report's tables as :class:`reports.tables.Table` models, built from the template context
of one run (:func:`run_tables`), the leaderboard (:func:`board_table`) and one analysis folder
(:func:`analysis_tables`). The template renders each with one macro
(``templates/table.j2``): whole and scrollable on screen, split into parts for print when too
wide, so no column is lost on either.
"""

from __future__ import annotations

from typing import Any

from reports.fmt import MISSING
from reports.tables import Cell, Table, table, transposed

PROBE_TAG = "sanity probe · counted in worst case"


def pivot_table(pivot: dict[str, Any], scoring: dict[str, Any]) -> Table:
    """Robust accuracy % [95% interval] per attack (rows) and eps (columns), the worst case and,
    for Monte Carlo, the worst case on all draws."""
    rows: list[list[Cell]] = []
    css: list[str] = []
    for r in pivot["rows"]:
        tag = PROBE_TAG if r["probe"] else ""
        rows.append([Cell(r["attack"], tag=tag), *(Cell(c) for c in r["cells"])])
        css.append("probe" if r["probe"] else "")
    probes = ", probes included" if pivot["any_probe"] else ""
    rows.append(
        [Cell(f"worst case (per example, all attacks{probes})"), *(Cell(c) for c in pivot["worst"])]
    )
    css.append("worst")
    if pivot["all_draws"]:
        rows.append(
            [
                Cell(f"correct on all {scoring['draws']} draws (worst case)"),
                *(Cell(c) for c in pivot["all_draws"]),
            ]
        )
        css.append("all-draws")
    cols = ["attack", *(f"eps {e}" for e in pivot["eps"])]
    return Table(cols, rows, css="robust-table", num=set(range(1, len(cols))), row_css=css)


def worst_table(run: dict[str, Any]) -> Table:
    """The worst case per eps and the clean row: accuracy, its 95% interval, the Monte-Carlo
    s.e. ("exact" for deterministic scoring), the share correct on all draws and the count."""
    mc = run["scoring"]["mc"]

    def se(value: str) -> str:
        return value if mc or value == MISSING else "exact"

    rows = [
        [w["eps"], w["acc"], w["ci"], se(w["se"]), w["all_draws"], w["n_robust"]]
        for w in run["worst_rows"]
    ]
    c = run["clean_detail"]
    rows.append(["clean", c["mean"], c["ci"], se(c["se"]), c["all_draws"], c["n_correct"]])
    cols = [
        "eps",
        "robust accuracy %" + (" (mean score)" if mc else ""),
        "95% interval %",
        "Monte-Carlo s.e. %",
        "correct on all draws %",
        "n robust (all draws)",
    ]
    return table(
        cols,
        rows,
        css="worst-table",
        num=range(1, 6),
        row_css=[""] * (len(rows) - 1) + ["clean-row"],
    )


def broken_by_table(broken: dict[str, Any]) -> Table:
    cols = ["eps", *(s["id"] + (" (probe)" if s["probe"] else "") for s in broken["sources"])]
    cols += ["robust", "total"]
    rows = [[r["eps"], *r["cells"], r["robust"], r["total"]] for r in broken["rows"]]
    return table(cols, rows, css="broken-by-table", num=range(1, len(cols)))


def per_class_table(run: dict[str, Any]) -> Table:
    label = run["per_class_label"]
    rows = [
        [r["name"], "" if r.get("n") is None else str(r["n"]), r["clean_pct"], r["robust_pct"]]
        for r in run["per_class"]
    ]
    return table(
        ["class", "n", "clean % [95% interval]", f"{label} % [95% interval]"],
        rows,
        css="per-class-table",
        num=(1, 2, 3),
    )


def details_table(details: dict[str, Any]) -> Table:
    """Every scalar the harness recorded per (attack, eps); attack and eps repeat in each
    printed part."""
    cols = ["attack", "eps", "robust % [95% interval]", *details["keys"]]
    rows = [[r["attack"], r["eps"], r["acc"], *r["cells"]] for r in details["rows"]]
    return table(cols, rows, css="details-table", key=2)


def protocol_tables(protocol: dict[str, Any]) -> list[Table]:
    """The protocol's list-valued entries (e.g. the attack plans), one table each."""
    return [
        table(t["keys"], t["rows"], css="protocol-table", title=name)
        for name, t in protocol["tables"]
    ]


def adaptive_table(ad: dict[str, Any]) -> Table:
    cols = ["addition", "why", "attacks it changed or added", "left out", *ad["extra_keys"]]
    rows = [
        [
            Cell(a["name"]),
            Cell(a["reason"]),
            Cell(a["attacks"]),
            Cell(a["left_out"], css="left-out" if a["has_left_out"] else ""),
            *(Cell(c) for c in a["extra"]),
        ]
        for a in ad["rows"]
    ]
    return Table(
        cols,
        rows,
        css="adaptive-table",
        title="adaptive additions (chosen from the model's traits)",
    )


def cost_table(parts: list[dict[str, str]]) -> Table:
    rows = [[c["label"], c["forward"], c["backward"], c["time"]] for c in parts]
    return table(["part", "forward", "backward", "time"], rows, css="cost-table", num=(1, 2, 3))


def run_tables(run: dict[str, Any]) -> dict[str, Any]:
    """Every table of one run section, keyed as the template uses them."""
    out: dict[str, Any] = {
        "pivot": pivot_table(run["pivot"], run["scoring"]),
        "worst": worst_table(run),
        "protocol": protocol_tables(run["protocol"]),
        "cost": cost_table(run["cost_parts"]) if run["cost_parts"] else None,
        "per_class": per_class_table(run) if run["per_class"] else None,
        "details": details_table(run["details"]) if run["details"]["rows"] else None,
        "broken_by": broken_by_table(run["broken_by"]) if run["broken_by"] else None,
        "adaptive": adaptive_table(run["protocol"]["adaptive"])
        if run["protocol"]["adaptive"]["rows"]
        else None,
    }
    return out


def board_table(board: dict[str, Any]) -> Table:
    """The leaderboard: rank, model (linked to its section), run, n, clean and worst case per
    eps with 95% intervals, preset, scoring, flags."""
    cols = ["#", "model", "run", "n", "clean % [95% interval]"]
    cols += [f"worst @ {e}" for e in board["eps"]] + ["preset", "scoring", "flags"]
    rows = [
        [
            Cell(str(r["rank"])),
            Cell(r["label"], href=f"#{r['anchor']}"),
            Cell(r["name"]),
            Cell(str(r["n"]) if r["n"] is not None else "–"),
            Cell(r["clean"]),
            *(Cell(c) for c in r["cells"]),
            Cell(r["preset"] or ""),
            Cell(r["scoring"]),
            Cell(str(r["flags"])),
        ]
        for r in board["rows"]
    ]
    num = {3, 4, *range(5, 5 + len(board["eps"])), len(cols) - 1}
    return Table(cols, rows, id="leaderboard-table", num=num, key=2)


def analysis_tables(a: dict[str, Any]) -> dict[str, Any]:
    """The tables of one analysis folder: its models, per-model scalars (matrix or grouped by
    layer) and the CSV tables it lists (``None`` entries for those not embedded)."""
    out: dict[str, Any] = {"models": None, "matrix": None, "grouped": None, "files": []}
    if a["models"]:
        out["models"] = table(a["models"]["keys"], a["models"]["rows"], css="analysis-models")
    if a["matrix"]:
        m = a["matrix"]
        out["matrix"] = table(
            ["scalar", *m["models"]],
            m["rows"],
            css="analysis-matrix",
            num=range(1, len(m["models"]) + 1),
        )
    if a["grouped"]:
        g = a["grouped"]
        out["grouped"] = table(
            g["columns"], g["rows"], css="analysis-grouped", num=range(2, len(g["columns"])), key=2
        )
    for t in a["tables"]:
        if t["rows"] is None:
            out["files"].append({"table": None, "info": t})
            continue
        rows = [[Cell(text, num=num) for text, num in row] for row in t["rows"]]
        num = {
            j
            for j in range(len(t["columns"]))
            if rows and all(r[j].num for r in rows if j < len(r))
        }
        # the leading text columns (e.g. model, layer, kind, stat) name a row: every printed
        # part repeats them
        key = next((j for j in range(len(t["columns"])) if j in num), len(t["columns"]))
        key = max(1, min(key, 4, len(t["columns"]) - 1))
        view = Table(
            t["columns"],
            rows,
            css=f"analysis-table {t['css']}",
            title=t["name"],
            title_note=t["description"],
            num=num,
            key=key,
        )
        rotated = transposed(view)
        if rotated is not None:  # a few wide rows: one column per row prints whole
            rotated.title_note = (t["description"] + "; " if t["description"] else "") + (
                f"rotated: one column per {t['columns'][0]}"
            )
            view = rotated
        out["files"].append({"table": view, "info": t})
    return out
