"""The client SDK and the CLI install and work without the server's packages (`pip install distillery`), and
the CLI checks the key before it streams an upload.

tests/support/no_server.py refuses fastapi, starlette, sqlalchemy, celery, kombu, torch, numpy, alembic,
uvicorn (and app/, worker/) with the ImportError a missing package gives; the commands run through their real
entry point against a real service.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support.service import ROOT, running_service

NO_SERVER = str(ROOT / "tests" / "support" / "no_server.py")
SERVER_PACKAGES = {
    "fastapi",
    "uvicorn",
    "python-multipart",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "pydantic-settings",
    "celery",
    "kombu",
    "numpy",
    "torch",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "safetensors",
    "tokenizers",
    "pyarrow",
    "prometheus-client",
    "pillow",
}


def _name(requirement: str) -> str:
    """'uvicorn[standard]>=0.30' -> 'uvicorn'."""
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_the_base_install_holds_none_of_the_servers_packages():
    project = _project()
    base = {_name(r) for r in project["dependencies"]}
    assert base & SERVER_PACKAGES == set(), base & SERVER_PACKAGES
    assert {"httpx", "pydantic", "typer", "rich"} <= base
    server = {_name(r) for r in project["optional-dependencies"]["server"]}
    assert SERVER_PACKAGES <= server, SERVER_PACKAGES - server
    assert "distillery[server]" in project["optional-dependencies"]["dev"]
    assert project["scripts"]["distillery"] == "distillery_cli.cli:main"


def test_the_image_installs_the_server_extra_and_copies_every_package():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ARG EXTRAS=server" in dockerfile and 'pip install -e ".[${EXTRAS}]"' in dockerfile
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    for pattern in packages["include"]:
        package = pattern.rstrip("*")
        assert f"COPY {package} ./{package}" in dockerfile, package


def _no_server(*args: str, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, NO_SERVER, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_stand_in_refuses_the_server_packages():
    """The check below is not vacuous: under no_server.py the server's packages do not import."""
    for module in ("fastapi", "sqlalchemy", "torch", "app.main", "worker.local"):
        done = _no_server("--import", module)
        assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr, module
    assert _no_server("--import", "distillery_client").returncode == 0


@pytest.mark.parametrize("command", [["up"], ["migrate"], ["keys", "create", "--tenant", "t"], ["example", "x"]])
def test_server_commands_without_the_server_exit_2_with_the_install_hint(command, tmp_path):
    done = _no_server(*command, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'distillery[server]'" in lines[0], done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    with running_service(tmp_path_factory.mktemp("packages-svc")) as service:
        yield service


@pytest.mark.integration
def test_the_client_and_the_cli_work_without_the_servers_packages(svc, tmp_path):
    key = svc.new_key("no-server")
    env = {**svc.env, "DISTILLERY_URL": svc.url, "DISTILLERY_API_KEY": key, "COLUMNS": "160"}
    helped = _no_server("--help", env=env)
    assert helped.returncode == 0 and "run" in helped.stdout and "jobs" in helped.stdout, helped.stderr
    listed = _no_server("jobs", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []  # a new tenant: the API answered, through the SDK
    sdk = _no_server(
        "--import",
        "distillery_client",
        env=env,
    )
    assert sdk.returncode == 0, sdk.stderr
    # A bad key reaches the API and comes back as its message, without the server's packages.
    refused = _no_server("models", "list", env={**env, "DISTILLERY_API_KEY": "dk_wrong"})
    assert refused.returncode == 1 and "invalid or revoked API key" in refused.stderr, refused.stderr


def _big_file(path: Path, size: int = 256 << 20) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)  # sparse: costs no disk, but 256 MiB to stream
    return path


def _posted_uploads(svc) -> list[str]:
    """The upload requests the API has logged (uvicorn's access log)."""
    return re.findall(r'"POST /v1/(?:models|datasets)[^"]*"', (svc.logs / "api.log").read_text(errors="replace"))


@pytest.mark.integration
def test_a_wrong_key_fails_before_run_streams_the_teacher(svc, tmp_path):
    teacher = _big_file(tmp_path / "teacher.pt")
    env = {**svc.env, "DISTILLERY_URL": svc.url, "DISTILLERY_API_KEY": "dk_wrong", "COLUMNS": "160"}
    before = _posted_uploads(svc)
    done = subprocess.run(
        [sys.executable, "-m", "distillery_cli", "run", "--teacher", str(teacher), "--train", str(teacher)]
        + ["--out", str(tmp_path / "out")],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "invalid or revoked API key" in done.stderr and "401" in done.stderr, done.stderr
    assert "upload teacher.pt" not in done.stderr  # no byte bar: nothing was streamed
    assert _posted_uploads(svc) == before
    assert '"GET /v1/models?limit=1' in (svc.logs / "api.log").read_text(errors="replace")


@pytest.mark.integration
def test_the_sdk_checks_the_key_before_streaming_an_upload(svc, tmp_path):
    from distillery_client import Distillery, DistilleryError

    teacher = _big_file(tmp_path / "teacher.pt")
    sent = []
    before = _posted_uploads(svc)
    with Distillery(svc.url, "dk_wrong") as api, pytest.raises(DistilleryError) as info:
        api.upload_model(teacher, progress=lambda done, total: sent.append(done))
    assert info.value.status == 401 and info.value.message == "invalid or revoked API key"
    assert sent == [] and _posted_uploads(svc) == before


@pytest.mark.integration
def test_run_says_it_reuses_an_upload_the_service_already_holds(svc, tmp_path):
    from tests.support.digits import digits_arrays, train_digits_teacher, write_npz
    from tests.support.service import Client

    x_train, y_train, _, _ = digits_arrays()
    teacher = train_digits_teacher(tmp_path)
    train = write_npz(tmp_path / "train.npz", x_train[:200], y_train[:200])
    key = svc.new_key("reuse")
    client = Client(svc.url, key)
    model_id = client.ready_upload("models", teacher)["id"]
    dataset_id = client.ready_upload("datasets", train)["id"]
    env = {**svc.env, "DISTILLERY_URL": svc.url, "DISTILLERY_API_KEY": key, "COLUMNS": "160"}
    done = subprocess.run(
        [sys.executable, "-m", "distillery_cli", "run", "--teacher", str(teacher), "--train", str(train)]
        + ["--epochs", "1", "--export", "safetensors", "--out", str(tmp_path / "out")],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr + svc.log_tail()
    text = " ".join(done.stderr.split())
    assert f"reusing model {model_id} (same sha256)" in text, text
    assert f"reusing dataset {dataset_id} (same sha256)" in text, text
    assert len(client.http.get("/v1/models").json()["data"]) == 1  # nothing was stored twice
