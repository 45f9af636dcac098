"""Real service processes for integration tests: an API (uvicorn) and Celery workers, on given backends."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from distillery_cli.server_commands import worker_argv

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_up(up: subprocess.Popen, log) -> int:
    """SIGTERM a `distillery up` started in its own session (Ctrl-C's path) and return its exit code."""
    os.killpg(up.pid, signal.SIGTERM)
    try:
        return up.wait(timeout=60)
    finally:
        log.close()


def assert_no_leftovers(up: subprocess.Popen) -> None:
    """No process of that session outlives `up`: its workers were stopped with it."""
    time.sleep(1)
    assert subprocess.run(["pgrep", "-s", str(up.pid)], capture_output=True, text=True).stdout.split() == []


@dataclass
class Service:
    """A running API and its workers."""

    url: str
    env: dict[str, str]
    data_dir: Path
    logs: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def cli(self, *args: str) -> str:
        """Run `distillery ...` against this service's settings; returns stdout."""
        out = subprocess.run(
            [sys.executable, "-m", "distillery_cli", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    def new_key(self, tenant: str) -> str:
        """A fresh API key for a tenant."""
        return self.cli("keys", "create", "--tenant", tenant).strip().splitlines()[-1]

    def start_worker(
        self, name: str, queues: str = "jobs,uploads", extra_env: dict | None = None, argv: list[str] | None = None
    ) -> None:
        """Start one more worker process (`argv`: another command line than `distillery up`'s)."""
        log = open(self.logs / f"worker-{name}.log", "ab")  # noqa: SIM115 - owned by the process
        self.procs[f"worker-{name}"] = subprocess.Popen(
            argv or worker_argv(queues, name),  # `up`'s command line, less its --quiet and log files
            env={**self.env, **(extra_env or {})},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def kill_worker(self, name: str, sig: int = 9) -> int:
        """Send a signal to a worker started by start_worker; returns its pid."""
        proc = self.procs[f"worker-{name}"]
        proc.send_signal(sig)
        return proc.pid

    def log_tail(self, chars: int = 6000) -> str:
        """The end of every process log, for failure messages."""
        parts = []
        for path in sorted(self.logs.glob("*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def running_service(
    tmp: Path,
    database_url: str | None = None,
    broker_url: str | None = None,
    workers: int = 1,
    extra_env: dict | None = None,
    queues: str = "jobs,uploads",
    worker_command=None,
) -> Iterator[Service]:
    """Migrate, start the API and `workers` workers, wait until /readyz says ready, and stop them after.

    `worker_command(queues, name) -> argv` replaces the workers' command line (default: `distillery up`'s).
    """
    data_dir = tmp / "data"
    logs = tmp / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_")}
    env.update(
        {
            "DISTILLERY_DATA_DIR": str(data_dir),
            "DISTILLERY_API_PORT": str(port),
            "DISTILLERY_WORKER_HEARTBEAT_INTERVAL_S": "1",
            "DISTILLERY_PROGRESS_INTERVAL_S": "0.2",
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            # Two cores run the API, workers and tests at once: one thread each avoids oversubscription.
            "OMP_NUM_THREADS": "1",
            **(extra_env or {}),
        }
    )
    if database_url:
        env["DISTILLERY_DATABASE_URL"] = database_url
    if broker_url:
        env["DISTILLERY_BROKER_URL"] = broker_url
    service = Service(url=f"http://127.0.0.1:{port}", env=env, data_dir=data_dir, logs=logs)
    try:
        service.cli("migrate")
        api_log = open(logs / "api.log", "ab")  # noqa: SIM115 - owned by the process
        service.procs["api"] = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=api_log,
            stderr=subprocess.STDOUT,
        )
        for i in range(workers):
            argv = worker_command(queues, f"w{i}") if worker_command else None
            service.start_worker(f"w{i}", queues=queues, argv=argv)
        wait_ready(service)
        yield service
    finally:
        service.stop()


def wait_ready(service: Service, timeout: float = 90) -> None:
    """Block until /readyz answers 200 (database, broker and a worker heartbeat)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(service.url + "/readyz", timeout=5)
            if last.status_code == 200:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"service not ready: {last!r}\n{service.log_tail()}")


class Client:
    """A tiny HTTP helper for tests: one tenant's key against one service."""

    def __init__(self, url: str, key: str):
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60)

    def upload(self, kind: str, path: Path, **fields) -> httpx.Response:
        """POST a file (and optional tokenizer) to /v1/models or /v1/datasets."""
        files = {"file": (path.name, path.read_bytes())}
        tokenizer = fields.pop("tokenizer", None)
        if tokenizer:
            files["tokenizer"] = ("tokenizer.json", Path(tokenizer).read_bytes())
        return self.http.post(f"/v1/{kind}", files=files, data={k: str(v) for k, v in fields.items()})

    def wait_upload(self, kind: str, obj_id: str, timeout: float = 120) -> dict:
        """Poll until an upload is ready or invalid."""
        return self._wait(f"/v1/{kind}/{obj_id}", ("ready", "invalid"), timeout)

    def wait_job(self, job_id: str, timeout: float = 600) -> dict:
        """Poll until the job has ended."""
        return self._wait(f"/v1/jobs/{job_id}", ("succeeded", "failed", "cancelled"), timeout)

    def _wait(self, path: str, done: tuple[str, ...], timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = self.http.get(path).json()
            if body.get("status") in done:
                return body
            time.sleep(0.3)
        raise AssertionError(f"{path} did not finish in {timeout} s: {body}")

    def ready_upload(self, kind: str, path: Path, **fields) -> dict:
        """Upload and wait until validated; fails the test unless ready."""
        resp = self.upload(kind, path, **fields)
        # 200: the tenant had uploaded the same bytes and options before, and this is that object (content-addressed).
        assert resp.status_code in (200, 201), resp.text
        body = self.wait_upload(kind, resp.json()["id"])
        assert body["status"] == "ready", body
        return body
