"""The trust boundary's rule itself (DESIGN.md): the worker process never opens, imports or loads an upload.

Two proofs, not a list of payloads:
- at import time: the modules the worker process runs import no library that loads a model, a dataset or a
  tokenizer (torch, onnx, onnxruntime, numpy, tokenizers, safetensors, pickle...) nor the engine, not even lazily;
- at run time: a worker whose loaders all raise (tests/support/guarded_worker.py) validates every kind of upload
  and runs whole jobs (a TorchScript teacher with augmentation, a .pt2 teacher, an ONNX teacher with an int8
  export, an uploaded student, text with a tokenizer) to success, and none of its loaders was ever called.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
import pytest

from distillery_cli.server_commands import worker_argv
from tests.support import digits
from tests.support.hostile import Linear, save_script
from tests.support.service import Client, running_service
from tests.support.text import text_fixture

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
WORKER_ENTRY_POINTS = ("worker.celery_app", "worker.tasks")  # what `celery -A worker.celery_app worker` imports
LOADER_LIBRARIES = (
    "torch",
    "onnx",
    "onnxruntime",
    "numpy",
    "tokenizers",
    "safetensors",
    "pickle",
    "dill",
    "joblib",
    "pyarrow",
    "PIL",
    "h5py",
)
CHILD_ONLY = ("worker.engine", "worker.job_child", "worker.inspect_child", "worker.salvage", "worker.onnx_check")


def _module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, package: str) -> set[str]:
    """Every module a file imports, at the top or inside functions, relative imports resolved."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)  # `from worker import runner` imports a module
    return names


def worker_process_imports() -> dict[str, set[str]]:
    """The project modules the worker process can import, each with what it imports (transitively closed)."""
    seen: dict[str, set[str]] = {}
    todo = list(WORKER_ENTRY_POINTS)
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if name in seen or path is None:
            continue
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        seen[name] = _imports(path, package)
        todo.extend(n for n in seen[name] if n.split(".")[0] in ("app", "worker"))
    return seen


def test_the_worker_process_imports_no_loader_and_no_engine():
    graph = worker_process_imports()
    assert "worker.runner" in graph and "worker.validate" in graph and "worker.supervisor" in graph, sorted(graph)
    offenders = {
        module: sorted(n for n in names if n.split(".")[0] in LOADER_LIBRARIES or n.startswith(CHILD_ONLY))
        for module, names in graph.items()
    }
    assert {m: bad for m, bad in offenders.items() if bad} == {}


def test_the_import_check_catches_a_loader_added_to_the_worker(tmp_path, monkeypatch):
    """The check above can fail: a runner that imported the engine would be caught."""
    import tests.test_trust_boundary as me

    fake_root = tmp_path / "root"
    for package in ("app", "worker"):
        (fake_root / package).mkdir(parents=True)
        (fake_root / package / "__init__.py").write_text("")
    (fake_root / "worker" / "celery_app.py").write_text("from worker import runner\n")
    (fake_root / "worker" / "tasks.py").write_text("")
    (fake_root / "worker" / "runner.py").write_text("def run():\n    from worker.engine import distill\n")
    monkeypatch.setattr(me, "ROOT", fake_root)
    graph = worker_process_imports()
    assert "worker.engine.distill" in graph["worker.runner"]


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A service whose one worker refuses, loudly and on record, to load anything."""
    tmp = tmp_path_factory.mktemp("guarded")
    mark = tmp / "loaders-called.txt"

    def command(queues: str, name: str) -> list[str]:
        celery_args = worker_argv(queues, name)[3:]  # after `python -m celery`
        return [sys.executable, str(ROOT / "tests" / "support" / "guarded_worker.py"), str(mark), *celery_args]

    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with running_service(tmp, extra_env=env, worker_command=command) as svc:
        yield svc, mark


def test_every_upload_and_job_runs_with_the_workers_loaders_refused(guarded, tmp_path):
    svc, mark = guarded
    client = Client(svc.url, svc.new_key("acme"))
    x_train, y_train, x_test, y_test = digits.digits_arrays()
    train = client.ready_upload("datasets", digits.write_npz(tmp_path / "train.npz", x_train, y_train))
    evaluation = client.ready_upload("datasets", digits.write_npz(tmp_path / "eval.npz", x_test, y_test))
    for sub in ("ts", "pt2", "onnx"):
        (tmp_path / sub).mkdir()
    teachers = {
        "torchscript": client.ready_upload("models", digits.train_digits_teacher(tmp_path / "ts")),
        "pt2": client.ready_upload("models", digits.export_teacher_pt2(tmp_path / "pt2")),
        "onnx": client.ready_upload("models", digits.export_teacher_onnx(tmp_path / "onnx")),
    }
    assert {k: v["format"] for k, v in teachers.items()} == {k: k for k in teachers}
    small = np.random.default_rng(0)
    tiny = client.ready_upload(
        "datasets",
        digits.write_npz(
            tmp_path / "tiny.npz", small.normal(size=(60, 4)).astype(np.float32), small.integers(0, 3, 60)
        ),
    )
    linear_teacher = client.ready_upload("models", save_script(Linear(), tmp_path / "linear.pt"))
    student = client.ready_upload("models", save_script(Linear(), tmp_path / "student.pt"))
    fx = text_fixture()
    text_fields = {
        "tokenizer": fx["tokenizer"],
        "text_column": "text",
        "label_column": "label",
        "max_length": fx["max_length"],
    }
    text_train = client.ready_upload("datasets", fx["train"], **text_fields)
    text_teacher = client.ready_upload("models", fx["teacher"])

    hyper = {"epochs": 2, "batch_size": 64}
    bodies = {
        "torchscript teacher, augmentation (teacher online)": {
            "teacher_id": teachers["torchscript"]["id"],
            "train_dataset_id": train["id"],
            "eval_dataset_id": evaluation["id"],
            "hyperparameters": {**hyper, "augmentation": {"noise": 0.05}},
        },
        "pt2 teacher, augmentation": {
            "teacher_id": teachers["pt2"]["id"],
            "train_dataset_id": train["id"],
            "hyperparameters": {**hyper, "augmentation": {"mixup": 0.2}},
        },
        "onnx teacher, onnx and int8 exports, baseline": {
            "teacher_id": teachers["onnx"]["id"],
            "train_dataset_id": train["id"],
            "baseline": True,
            "export": ["torchscript", "onnx", "int8", "safetensors"],
            "hyperparameters": hyper,
        },
        "uploaded student": {
            "teacher_id": linear_teacher["id"],
            "train_dataset_id": tiny["id"],
            "student": {"model_id": student["id"]},
            "hyperparameters": {"epochs": 1, "batch_size": 16},
        },
        "text with a tokenizer": {
            "teacher_id": text_teacher["id"],
            "train_dataset_id": text_train["id"],
            "student": {"architecture": "lstm", "embedding_dim": 16, "hidden_dim": 16},
            "hyperparameters": {"epochs": 1, "batch_size": 64},
        },
    }
    jobs = {}
    for what, body in bodies.items():
        resp = client.http.post("/v1/jobs", json=body)
        assert resp.status_code == 201, (what, resp.text)
        jobs[what] = resp.json()["id"]
    for what, job_id in jobs.items():
        job = client.wait_job(job_id, timeout=600)
        assert job["status"] == "succeeded", (what, job, svc.log_tail())
        names = {a["name"] for a in client.http.get(f"/v1/jobs/{job_id}/artifacts").json()["data"]}
        assert "report.json" in names and "student.pt" in names, (what, names)
    assert not mark.exists(), f"the worker process called: {mark.read_text()}"


def test_the_guard_is_not_vacuous(tmp_path):
    """In a process where the guard is installed, each loader really raises and leaves its name."""
    import subprocess

    mark = tmp_path / "called.txt"
    code = (
        "import sys; sys.argv = ['x', sys.argv[1]]\n"
        "sys.path.insert(0, 'tests/support'); import guarded_worker as g; g.install()\n"
        "import numpy, torch, onnxruntime, tokenizers\n"
        "for call in (lambda: numpy.load('x'), lambda: torch.jit.load('x'), lambda: torch.export.load('x'),\n"
        "             lambda: onnxruntime.InferenceSession('x'), lambda: tokenizers.Tokenizer.from_file('x')):\n"
        "    try:\n        call()\n    except RuntimeError:\n        pass\n"
    )
    subprocess.run([sys.executable, "-c", code, str(mark)], cwd=ROOT, check=True, timeout=120)
    assert mark.read_text().split() == [
        "numpy.load",
        "torch.jit.load",
        "torch.export.load",
        "onnxruntime.InferenceSession",
        "tokenizers.Tokenizer.from_file",
    ]
