"""`distillery up` through its real entry point: a short banner (URL, dashboard, API docs, data dir, workers and
their log files, the key), the noise (migrations, Celery's banners and warnings) in the workers' log files, a taken
port refused before a URL or a key is printed, and a loud warning when uploads would run without bubblewrap."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.service import assert_no_leftovers, free_port, stop_up

DISTILLERY = str(Path(sys.executable).parent / "distillery")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_")}
    env.update(DISTILLERY_DATA_DIR=str(tmp_path / "data"), PYTHONUNBUFFERED="1", **extra)
    return env


def _start(tmp_path: Path, port: int, **extra_env: str) -> tuple[subprocess.Popen, object]:
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115 - closed by stop_up
    up = subprocess.Popen(
        [DISTILLERY, "up", "--port", str(port)],
        env=_env(tmp_path, **extra_env),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return up, log


def _wait_for(tmp_path: Path, up: subprocess.Popen, ready, timeout: float = 120) -> str:
    """Wait until ready(output) is true; the output so far."""
    deadline = time.monotonic() + timeout
    while True:
        output = (tmp_path / "up.log").read_text()
        if ready(output):
            return output
        assert up.poll() is None and time.monotonic() < deadline, output[-3000:]
        time.sleep(0.5)


def _bwrap_works() -> bool:
    bwrap = shutil.which("bwrap")
    cmd = [bwrap or "bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "true"]
    return bool(bwrap) and subprocess.run(cmd, capture_output=True, timeout=20).returncode == 0


def test_up_prints_a_short_banner_and_keeps_the_noise_in_log_files(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    up, log = _start(tmp_path, port)
    try:

        def ready(_output: str) -> bool:
            try:
                return httpx.get(url + "/readyz", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        _wait_for(tmp_path, up, ready)
        time.sleep(1)  # the workers' own start-up lines, if they leaked, would be here by now
        output = (tmp_path / "up.log").read_text()
        data = (tmp_path / "data").resolve()
        key = (data / "api_key").read_text().strip()
        lines = output.splitlines()
        assert key in lines, output  # on its own line, to copy
        banner = [line for line in lines if line.strip() and line != key]
        assert banner[0].startswith(f"Distillery is up at {url} "), output
        assert any("dashboard" in line and line.rstrip().endswith(f"{url}/") for line in banner), output
        assert any("docs" in line and f"{url}/docs" in line for line in banner), output
        assert any("data" in line and str(data) in line for line in banner), output
        assert any(str(data / "api_key") in line for line in banner), output
        workers = [line for line in banner if "workers" in line]
        assert workers and "jobs" in workers[0] and "uploads" in workers[0] and str(data / "logs") in workers[0]
        for noise in (
            "alembic",
            "migrat",
            "celery",
            "Celery",
            "[tasks]",
            "SecurityWarning",
            "superuser",
            "Uvicorn",
            "INFO",
        ):
            assert noise not in output, f"{noise!r} in the banner:\n{output}"
        sandbox_warning = [line for line in banner if "WITHOUT A SANDBOX" in line]
        assert bool(sandbox_warning) != _bwrap_works(), output
        assert len(banner) <= 6 + (4 if sandbox_warning else 0), output
        # What the terminal no longer shows is in the log files the banner names (/readyz needs one worker: the
        # other may still be starting).
        for name in ("jobs", "uploads"):
            path = data / "logs" / f"worker-{name}.log"
            deadline = time.monotonic() + 60
            while f"{name}@" not in path.read_text() and time.monotonic() < deadline:
                time.sleep(0.5)
            text = path.read_text()
            assert f"{name}@" in text and "ready" in text, text[-3000:]
            if os.getuid() == 0:  # Celery's warning about root, out of the terminal
                assert "SecurityWarning" in text, text[-3000:]
    finally:
        code = stop_up(up, log)
    assert code == 0, (tmp_path / "up.log").read_text()[-3000:]
    assert (tmp_path / "up.log").read_text().rstrip().endswith("Distillery stopped.")
    assert_no_leftovers(up)


def test_up_on_a_taken_port_says_so_before_printing_a_url_or_a_key(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        out = subprocess.run(
            [DISTILLERY, "up", "--port", str(port)],
            env=_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=120,
            start_new_session=True,
        )
        said = (out.stdout + out.stderr).strip()
        assert out.returncode == 1, said
        assert time.monotonic() - started < 30, said
        assert len(said.splitlines()) == 1 and "already in use" in said and "--port" in said, said
        assert "http://" not in said and "dk_" not in said, said
        assert not (tmp_path / "data" / "api_key").exists()  # no key was made for a service that never ran


def test_up_warns_loudly_when_uploads_would_run_without_bubblewrap(tmp_path):
    # A PATH without bwrap: the venv's own programs only.
    up, log = _start(tmp_path, free_port(), PATH=str(Path(sys.executable).parent))
    try:
        output = _wait_for(tmp_path, up, lambda text: "dk_" in text)
    finally:
        code = stop_up(up, log)
    assert code == 0, (tmp_path / "up.log").read_text()[-3000:]
    assert "WARNING: bubblewrap (bwrap) is not on PATH: uploads run WITHOUT A SANDBOX" in output, output
    warning = output[output.index("WARNING") :]
    for text in (
        "second tenant",
        "TorchScript and .pt2",
        "sandbox_unavailable",
        "DISTILLERY_ALLOW_UNSANDBOXED=1",
        "Install bubblewrap",
    ):
        assert text in warning, output
    assert_no_leftovers(up)
