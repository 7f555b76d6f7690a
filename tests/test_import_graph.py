"""The import graph of ``evalkit/``, built statically with :mod:`ast`: no cycles, and the library
never imports the CLI layer (``evalkit.commands``).

Every ``import``/``from ... import`` counts, also inside functions (a lazy import is still a
dependency; only ``if TYPE_CHECKING:`` blocks are left out). ``from pkg import name`` is an
edge to ``pkg.name`` when that is a module, else to ``pkg``; importing a submodule is not
counted as importing its parent package's ``__init__``.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, list[str]]]:
    """(imported module, names) pairs of every import outside ``if TYPE_CHECKING:`` blocks."""
    out: list[tuple[str, list[str]]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                out.extend((alias.name, []) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split(".")
                    base = base if is_package else base[:-1]
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join([*base, *([child.module] if child.module else [])])
                else:
                    target = child.module or ""
                out.append((target, [alias.name for alias in child.names]))
            visit(child)

    visit(tree)
    return out


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module -> modules of the same top-level package it imports."""
    root = package_dir.parent
    files = {_module_name(p, root): p for p in package_dir.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: set[str] = set()
        for target, names in _imports(tree, name, path.name == "__init__.py"):
            candidates = [f"{target}.{n}" for n in names if f"{target}.{n}" in files]
            if names and len(candidates) == len(names):
                edges.update(candidates)
                continue
            edges.update(candidates)
            while target and target not in files:
                target = target.rpartition(".")[0]
            if target:
                edges.add(target)
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = dfs(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = dfs(node)
            if found:
                return found
    return None


@cache
def _evalkit_graph() -> dict[str, set[str]]:
    return import_graph(ROOT / "evalkit")


def _importers_of(graph: dict[str, set[str]], prefix: str) -> list[str]:
    return sorted(
        m
        for m, edges in graph.items()
        if any(e == prefix or e.startswith(prefix + ".") for e in edges)
    )


def _external_imports(directory: Path, prefix: str) -> list[str]:
    """Files under ``directory`` importing ``prefix`` (or a submodule of it)."""
    hits = []
    for path in sorted(directory.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        name = _module_name(path, directory.parent)
        for target, names in _imports(tree, name, path.name == "__init__.py"):
            full = [target, *(f"{target}.{n}" for n in names)]
            if any(t == prefix or t.startswith(prefix + ".") for t in full):
                hits.append(str(path.relative_to(ROOT)))
                break
    return hits


def test_the_checker_finds_cycles_and_resolves_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg.sub import a\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("from . import b\n")
    (pkg / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.sub import a\n"
        "def f():\n    from pkg import c\n"
    )
    (pkg / "c.py").write_text("import pkg.sub.a\n")
    graph = import_graph(pkg)
    assert graph["pkg"] == {"pkg.sub.a"}
    assert graph["pkg.sub.a"] == {"pkg.sub.b"}
    assert graph["pkg.sub.b"] == {"pkg.c"}  # lazy import counted, TYPE_CHECKING not
    assert find_cycle(graph) == ["pkg.sub.a", "pkg.sub.b", "pkg.c", "pkg.sub.a"]
    (pkg / "c.py").write_text("")
    assert find_cycle(import_graph(pkg)) is None


def test_evalkit_has_no_import_cycle():
    cycle = find_cycle(_evalkit_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_attacks_package_has_no_import_cycle():
    graph = _evalkit_graph()
    sub = {
        m: {e for e in edges if e.startswith("evalkit.attacks")}
        for m, edges in graph.items()
        if m.startswith("evalkit.attacks")
    }
    cycle = find_cycle(sub)
    assert cycle is None, " -> ".join(cycle or [])


def test_attack_registry_imports_no_attack_module():
    graph = _evalkit_graph()
    assert {
        e for e in graph["evalkit.attacks.registry"] if e.startswith("evalkit.attacks")
    } == set()


def test_library_never_imports_the_cli_layer():
    graph = _evalkit_graph()
    offenders = [
        m
        for m in _importers_of(graph, "evalkit.commands")
        if not (m == "evalkit.cli" or m == "evalkit.commands" or m.startswith("evalkit.commands."))
    ]
    assert offenders == []


def test_analysis_and_reports_do_not_import_the_cli_layer():
    offenders = [
        hit
        for d in ("analysis", "reports")
        if (ROOT / d).is_dir()
        for hit in _external_imports(ROOT / d, "evalkit.commands")
    ]
    assert offenders == []


# Training and evaluating go through the public API (evalkit.train / evalkit.evaluate /
# evalkit.attacks); the machinery behind it and the pipelines are off limits for analyses and
# renderers.
INTERNALS = (
    "evalkit.commands",
    "evalkit.pipelines",
    "evalkit.training.trainer",
    "evalkit.training.objectives",
    "evalkit.evaluation.engine",
    "evalkit.evaluation.units",
    "evalkit.evaluation.sanity",
    "evalkit.evaluation.protocol",
)


@pytest.mark.parametrize("prefix", INTERNALS)
def test_analysis_and_reports_train_and_attack_only_through_the_api(prefix):
    offenders = [
        hit
        for d in ("analysis", "reports")
        if (ROOT / d).is_dir()
        for hit in _external_imports(ROOT / d, prefix)
    ]
    assert offenders == []


def test_library_never_imports_the_pipelines():
    graph = _evalkit_graph()
    offenders = [
        m
        for m in _importers_of(graph, "evalkit.pipelines")
        if not (
            m in ("evalkit.cli", "evalkit.pipelines")
            or m.startswith(("evalkit.commands.", "evalkit.pipelines."))
        )
    ]
    assert offenders == []


def test_evaluation_and_checkpoints_do_not_import_the_trainer():
    """Evaluating a model needs to know whether its checkpoint finished training, not how it
    was trained: that fact lives in evalkit.checkpoint.progress."""
    graph = _evalkit_graph()
    offenders = [
        m
        for m in _importers_of(graph, "evalkit.training")
        if m.startswith(("evalkit.evaluation", "evalkit.checkpoint", "evalkit.attacks"))
    ]
    assert offenders == []


# One parser per concept (issue 20): a second eps or normalization parser is how the CLI and
# the API came to disagree ("0.5" accepted by one, refused by the other), so only the parser
# module may define one; everything else calls it.
PARSER_MODULE = "evalkit/utils/parse.py"
PARSER_NAMES = (
    "parse_normalize",
    "_parse_normalize",
    # KEY=VALUE flags (--param of attack and train, --option of analyze) were read three ways
    "parse_key_values",
    "parse_value",
    "_params",
    "_value",
    "_number",
)
PARSER_PREFIXES = ("parse_eps", "_parse_eps")


def parser_definitions(directories: list[Path], root: Path = ROOT) -> list[str]:
    """``path:line name`` of every function (also nested or a method) whose name is a parser's."""
    hits = []
    for directory in directories:
        for path in sorted(directory.rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                    node.name in PARSER_NAMES or node.name.startswith(PARSER_PREFIXES)
                ):
                    hits.append(f"{path.relative_to(root).as_posix()}:{node.lineno} {node.name}")
    return hits


def test_the_parser_scan_finds_definitions(tmp_path):
    (tmp_path / "m.py").write_text(
        "def parse_eps_budget(x):\n    return x\n\nclass C:\n    def _parse_normalize(self):\n"
        "        def parse_eps(): pass\n"
    )
    names = [h.split()[1] for h in parser_definitions([tmp_path], tmp_path)]
    assert names == ["parse_eps_budget", "_parse_normalize", "parse_eps"]


def test_only_the_parser_module_defines_eps_normalize_and_key_value_parsers():
    dirs = [ROOT / d for d in ("evalkit", "analysis", "reports") if (ROOT / d).is_dir()]
    hits = parser_definitions(dirs)
    assert hits and all(h.startswith(f"{PARSER_MODULE}:") for h in hits), hits


# ------------------------------------------------------------------- no private names across modules

LIBRARY_DIRS = ("evalkit", "analysis", "reports", "bench")


def private_imports(directories: list[Path], root: Path = ROOT) -> list[str]:
    """``path:line: name`` for every ``from X import _name`` (a leading-underscore name that is
    not a dunder) in the given trees: a name another module needs is part of its interface and
    gets a public name. Tests are left out on purpose: a unit test may exercise an internal."""
    hits = []
    for directory in directories:
        for path in sorted(directory.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.ImportFrom) or node.module == "__future__":
                    continue
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        hits.append(f"{path.relative_to(root)}:{node.lineno}: {alias.name}")
    return hits


def test_the_private_import_scan_finds_them(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text(
        "from __future__ import annotations\nfrom pkg.b import __version__, public\n"
        "def f():\n    from pkg.b import _hidden\n"
    )
    assert private_imports([tmp_path / "pkg"], tmp_path) == ["pkg/a.py:4: _hidden"]


def test_no_module_imports_another_modules_private_name():
    hits = private_imports([ROOT / d for d in LIBRARY_DIRS])
    assert not hits, "give these a public name in the module that defines them:\n" + "\n".join(hits)
