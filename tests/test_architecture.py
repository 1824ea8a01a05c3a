"""The layering of the package tree, enforced: import-linter contracts (pyproject.toml) and no import circle."""

import shutil
import subprocess
import sys
from pathlib import Path

import grimp

import gradwidgets as gw

ROOT = Path(__file__).resolve().parents[1]

PUBLIC_API = {
    "ACTIVATIONS", "CELLS", "DATASETS", "DIAGNOSES", "INITS", "KINDS", "NORMS", "OPTIMIZERS",
    "Compare", "Dataset", "Diagnosis", "GradientMonitor", "GradientProbe", "GradientStats", "History",
    "NetConfig", "Playground", "TrainingSession", "build_model", "diagnose", "make_dataset", "theoretical_bound",
}  # fmt: skip


def test_import_linter_contracts_are_kept():
    command = shutil.which("lint-imports") or [sys.executable, "-m", "importlinter.cli"]
    result = subprocess.run(
        [command] if isinstance(command, str) else command, capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "0 broken" in result.stdout


def strongly_connected_components(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative: the groups of modules that reach each other through imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[set[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                components.append(component)
    return components


def package_import_graph() -> dict[str, set[str]]:
    """Module -> modules of the package it imports (a package's ``__init__`` re-exports are left out: importing
    a sub-module always runs its package's ``__init__`` first, which is not an import of the sub-module's)."""
    graph = grimp.build_graph("gradwidgets")
    modules = sorted(graph.modules)
    out: dict[str, set[str]] = {}
    for module in modules:
        imported = graph.find_modules_directly_imported_by(module)
        out[module] = {m for m in imported if m.startswith("gradwidgets") and not module.startswith(m + ".")}
    return out


def test_strongly_connected_components_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert {frozenset(c) for c in strongly_connected_components(graph) if len(c) > 1} == {frozenset("abc")}


def test_no_import_circle_among_the_package_modules():
    graph = package_import_graph()
    assert "gradwidgets.nets.build" in graph and "gradwidgets.apps.playground" in graph
    circles = [sorted(c) for c in strongly_connected_components(graph) if len(c) > 1]
    assert circles == []


def test_the_tree_shows_the_layers():
    package = ROOT / "gradwidgets"
    for layer in ("nets", "core", "runtime", "widgets", "apps", "dashboard"):
        assert (package / layer / "__init__.py").is_file(), layer
    loose = sorted(p.name for p in package.glob("*.py"))
    assert loose == ["__init__.py", "__main__.py", "testing.py", "validation.py"]  # validation: the bottom layer


def test_public_api_is_unchanged():
    assert set(gw.__all__) >= PUBLIC_API
    for name in gw.__all__:
        assert getattr(gw, name) is not None


def test_apps_share_through_modules_not_through_each_other():
    apps = {"gradwidgets.apps." + name for name in ("playground", "compare", "monitor", "run_viewer")}
    graph = package_import_graph()
    reaching = {app: sorted(graph[app] & apps) for app in apps}
    assert reaching == {app: [] for app in apps}, "an app imports another app: move the shared part to a module"
