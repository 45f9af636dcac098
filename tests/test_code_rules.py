"""Rules the code keeps, checked on its syntax tree: no unsafe deserialisation, and the import boundaries."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = [
    p
    for d in ("app", "worker", "contract", "htmlreport", "distillery_client", "distillery_cli")
    for p in (ROOT / d).rglob("*.py")
]


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def test_no_torch_load_without_weights_only_and_no_pickle_loads():
    offenders = []
    for path in PRODUCT:
        for call, name in _calls(path):
            keywords = {k.arg: k.value for k in call.keywords}
            if name.endswith("torch.load") or name == "load" and "weights_only" in keywords:
                ok = isinstance(keywords.get("weights_only"), ast.Constant) and keywords["weights_only"].value is True
                if not ok:
                    offenders.append(f"{path.relative_to(ROOT)}:{call.lineno} {name}")
            if name in ("pickle.load", "pickle.loads", "cPickle.load", "dill.load", "joblib.load"):
                offenders.append(f"{path.relative_to(ROOT)}:{call.lineno} {name}")
            if name.endswith("np.load") or name.endswith("numpy.load"):
                allow = keywords.get("allow_pickle")
                if isinstance(allow, ast.Constant) and allow.value is True:
                    offenders.append(f"{path.relative_to(ROOT)}:{call.lineno} np.load(allow_pickle=True)")
    assert offenders == []


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_engine_imports_nothing_from_the_service():
    for path in (ROOT / "worker" / "engine").rglob("*.py"):
        bad = {
            n
            for n in _imports(path)
            if n.split(".")[0] in ("app", "celery", "fastapi", "sqlalchemy")
            or (n.startswith("worker.") and not n.startswith("worker.engine"))
        }
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_the_api_package_never_imports_torch_even_lazily():
    for path in (ROOT / "app").rglob("*.py"):
        bad = {n for n in _imports(path) if n.split(".")[0] in ("torch", "onnxruntime")}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"
