"""The shape of the code: which package may import which, no import cycles, and modules and functions kept small.

The layers (DESIGN.md, "Layout"; README, "Layout"), each allowed to import only the ones listed for it:

    contract           the job's vocabulary and the API's wire shapes: imports nothing of ours
    htmlreport         renders report.json as HTML/SVG, for the server and the CLI
    distillery_client  the Python SDK (httpx): the contract only
    worker.engine      the PyTorch engine, run inside the job child: the contract only
    app                the HTTP service, its database and storage: contract, htmlreport
    migrations         Alembic: app's models
    worker             the Celery worker, supervisor and sandbox: app, the engine, the contract
    distillery_cli     the `distillery` command: anything (server commands import app and worker lazily)
"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Most specific first: worker.engine is its own layer inside worker.
ALLOWED: dict[str, set[str]] = {
    "contract": set(),
    "htmlreport": {"contract"},
    "distillery_client": {"contract"},
    "worker.engine": {"contract"},
    "app": {"contract", "htmlreport"},
    "migrations": {"app", "contract"},
    "worker": {"contract", "worker.engine", "app", "htmlreport"},
    "distillery_cli": {"contract", "htmlreport", "distillery_client", "worker.engine", "app", "worker"},
}
LAYERS = sorted(ALLOWED, key=lambda name: -name.count("."))  # worker.engine matched before worker

MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60
# The exceptions we keep, each with its reason. A file or function listed here that has shrunk below the
# limit fails the test too, so the list never goes stale.
MODULE_EXCEPTIONS: dict[str, str] = {}
FUNCTION_EXCEPTIONS: dict[str, str] = {
    "migrations/versions/0001_initial_schema.py::upgrade": "a migration records the schema as it was on one day; "
    "it is never edited, only followed by new migrations",
}


def layer_of(module: str) -> str | None:
    """The layer a dotted module name belongs to, or None for third-party and standard modules."""
    for layer in LAYERS:
        if module == layer or module.startswith(layer + "."):
            return layer
    return None


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str, bool]]:
    """(line, imported module, at module level) for every import in a file, relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, id(node) in top_level) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base, id(node) in top_level))
            # `from worker import runner` imports the module worker.runner
            found += [(node.lineno, f"{base}.{a.name}", id(node) in top_level) for a in node.names if a.name != "*"]
    return found


def product_files() -> list[Path]:
    """Every Python file of the product (not tests), in the layers above."""
    return sorted(p for layer in ALLOWED if layer != "worker.engine" for p in (ROOT / layer).rglob("*.py"))


def wrong_way_imports(files: list[Path]) -> list[str]:
    """Every import, at module level or inside a function, that goes against ALLOWED."""
    offenders = {}
    for path in files:
        own = layer_of(_module_name(path))
        for line, name, _ in imports_of(path):
            target = layer_of(name)
            if target and own and target != own and target not in ALLOWED[own]:
                where = f"{path.relative_to(ROOT)}:{line}"
                if where not in offenders or len(name) < len(offenders[where][0]):
                    offenders[where] = (name, f"{where} ({own}) imports {name} ({target})")
    return sorted(text for _, text in offenders.values())


def test_the_layers_form_an_order_and_every_import_follows_it():
    order = list(TopologicalSorter(ALLOWED).static_order())
    print("\nlayer order, lowest first: " + " < ".join(order))
    offenders = wrong_way_imports(product_files())
    assert offenders == [], "\n".join(offenders)


def test_the_layer_check_catches_a_wrong_way_import(tmp_path, monkeypatch):
    """The check itself can fail: a contract module importing the server is reported."""
    fake = tmp_path / "contract" / "bad.py"
    fake.parent.mkdir()
    fake.write_text("def f():\n    from app.db import get_sessionmaker\n")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert wrong_way_imports([fake]) == ["contract/bad.py:2 (contract) imports app.db (app)"]


def _module_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in product_files() + list((ROOT / "worker" / "engine").rglob("*.py"))}
    graph = {}
    for name, path in files.items():
        # A module's own parent packages are imported with it anyway: not an edge of a cycle.
        ancestors = {name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)}
        targets = {n for _, n, top in imports_of(path) if top and n in files and n != name and n not in ancestors}
        graph[name] = targets
    return graph


def test_no_import_cycles_between_modules():
    try:
        list(TopologicalSorter(_module_graph()).static_order())
    except CycleError as cycle:
        pytest.fail(f"import cycle: {' -> '.join(cycle.args[1])}")


def _sizes() -> tuple[dict[str, int], dict[str, int]]:
    modules, functions = {}, {}
    for path in set(product_files()) | set((ROOT / "worker" / "engine").rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        text = path.read_text()
        modules[rel] = len(text.splitlines())
        tree = ast.parse(text, rel)
        stack = [(tree, "")]
        while stack:
            node, prefix = stack.pop()
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    qual = f"{prefix}{child.name}"
                    if not isinstance(child, ast.ClassDef):
                        functions[f"{rel}::{qual}"] = child.end_lineno - child.lineno + 1
                    stack.append((child, qual + "."))
    return modules, functions


def test_no_module_over_the_limit_but_the_listed_exceptions():
    modules, _ = _sizes()
    over = {m: n for m, n in modules.items() if n > MAX_MODULE_LINES}
    print("\nlargest modules: " + ", ".join(f"{m} {n}" for m, n in sorted(modules.items(), key=lambda x: -x[1])[:8]))
    assert sorted(f"{m} ({over[m]} lines)" for m in set(over) - set(MODULE_EXCEPTIONS)) == []
    assert sorted(set(MODULE_EXCEPTIONS) - set(over)) == [], "an exception is no longer needed: remove it"


def test_no_function_over_the_limit_but_the_listed_exceptions():
    _, functions = _sizes()
    over = {f: n for f, n in functions.items() if n > MAX_FUNCTION_LINES}
    assert sorted(f"{f} ({n} lines)" for f, n in over.items() if f not in FUNCTION_EXCEPTIONS) == []
    assert sorted(set(FUNCTION_EXCEPTIONS) - set(over)) == [], "an exception is no longer needed: remove it"
