"""The `distillery` command: run the service, its parts, keys, and local distillation."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from app.cli_webhooks import webhooks_app

logger = logging.getLogger(__name__)

app = typer.Typer(
    help="Distillery: knowledge distillation as a service.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(webhooks_app, name="webhooks")

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Folder for the SQLite database, embedded "
        "broker and files (default: DISTILLERY_DATA_DIR or ./.distillery)",
    ),
]


def _log_level() -> str:
    from app.settings import Settings

    return Settings().log_level.upper()


def _configure(data_dir: Path | None) -> None:
    """Point this process and its children at one data directory, before settings are read."""
    logging.basicConfig(
        level=_log_level(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from app.logredact import install_log_redaction

    install_log_redaction()
    if data_dir is not None:
        os.environ["DISTILLERY_DATA_DIR"] = str(data_dir.resolve())
    from app.settings import get_settings

    get_settings.cache_clear()
    get_settings().data_dir.mkdir(parents=True, exist_ok=True)


def _migrate() -> None:
    from app.migrate import upgrade
    from app.settings import get_settings

    upgrade(get_settings().resolved_database_url)


@app.command()
def migrate(data_dir: DataDir = None) -> None:
    """Migrate the database to the newest schema."""
    _configure(data_dir)
    _migrate()
    typer.echo("database is at the newest schema")


def worker_argv(queues: str, name: str, quiet: bool = False, loglevel: str = "INFO") -> list[str]:
    """The command line of one Celery worker process, as `up` and `worker` start it (`quiet`: no banner)."""
    # Solo pool: the task runs in the worker's own process, which initialises CUDA itself (CUDA and fork
    # do not mix) and trains one job at a time.
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app",
        *(["--quiet"] if quiet else []),
        "worker",
        "--pool=solo",
        "--concurrency=1",
        f"--queues={queues}",
        f"--hostname={name}@%h",
        f"--loglevel={loglevel}",
        "--without-gossip",
        "--without-mingle",
    ]


@app.command()
def worker(
    data_dir: DataDir = None,
    queues: Annotated[str, typer.Option(help="Queues to serve")] = "jobs,uploads",
    name: Annotated[str, typer.Option(help="Worker name")] = "worker",
) -> None:
    """Start one worker (one per GPU; pin it with CUDA_VISIBLE_DEVICES)."""
    _configure(data_dir)
    os.execv(sys.executable, worker_argv(queues, f"{name}-{os.getpid()}"))


@app.command()
def api(
    data_dir: DataDir = None,
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Start the HTTP API alone."""
    import uvicorn

    from app.settings import get_settings

    _configure(data_dir)
    settings = get_settings()
    uvicorn.run("app.main:app", host=host or settings.api_host, port=port or settings.api_port, log_level="info")


def _default_key() -> str:
    """The key printed by `up`: kept (0600) in the data directory so restarts print the same one."""
    from app.auth import create_key, tenant_for_key
    from app.db import get_sessionmaker
    from app.settings import get_settings

    key_file = get_settings().data_dir / "api_key"
    with get_sessionmaker()() as session:
        if key_file.exists():
            key = key_file.read_text().strip()
            if tenant_for_key(session, key) is not None:
                return key
        key = create_key(session, "default")
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    return key


def _server_class():
    import contextlib

    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn re-raises a caught SIGTERM after shutdown; `up` must stop its workers first and exit 0."""

        @contextlib.contextmanager
        def capture_signals(self):
            original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

    return Server


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port for the API (uvicorn listens on it), or OSError when the address is taken."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a TIME_WAIT port is free
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def _sandbox_warning(settings) -> str | None:
    """A loud paragraph for `up`'s banner when uploads will be opened without bubblewrap (README, Trust boundary)."""
    if settings.sandbox in ("auto", "bwrap"):
        bwrap = shutil.which("bwrap")
        if bwrap and _runs([bwrap, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "true"]):
            return None
        why = "bubblewrap (bwrap) is not on PATH" if not bwrap else "bubblewrap (bwrap) cannot create namespaces here"
    elif settings.sandbox == "unshare":
        why = "DISTILLERY_SANDBOX=unshare"
    else:
        why = "DISTILLERY_SANDBOX=none"
    if settings.allow_unsandboxed:
        tenants = "DISTILLERY_ALLOW_UNSANDBOXED=1: every tenant's TorchScript and .pt2 uploads run so."
    else:
        tenants = (
            "Fine while you are the only tenant; once a second tenant has a key, TorchScript and .pt2 uploads\n"
            "  and uploaded students are refused (sandbox_unavailable) unless DISTILLERY_ALLOW_UNSANDBOXED=1."
        )
    return (
        f"WARNING: {why}: uploads run WITHOUT A SANDBOX (they can read this machine's files).\n"
        f"  {tenants}\n"
        "  Install bubblewrap (apt-get install bubblewrap) and restart; see the README's Trust boundary."
    )


def _runs(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@app.command()
def up(
    data_dir: DataDir = None,
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Start everything on this machine: API, workers, SQLite and an embedded broker; Ctrl-C stops it."""
    import uvicorn

    from app.settings import get_settings

    _configure(data_dir)
    settings = get_settings()
    host, port = host or settings.api_host, port or settings.api_port
    try:  # before anything is printed or created: a taken port says so, and how to pick another
        sock = _listen(host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            message = (
                f"port {port} on {host} is already in use (another `distillery up`, or another program); "
                f"start on another port with --port, e.g. `distillery up --port {port + 1}`"
            )
        else:
            message = f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --host or --port"
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(1) from None
    debug = settings.log_level.upper() == "DEBUG"
    if not debug:  # the banner is what a user reads; the migration's steps are for debugging
        for name in ("alembic", "app.migrate"):
            logging.getLogger(name).setLevel(logging.WARNING)
    _migrate()
    key = _default_key()
    data = settings.data_dir.resolve()
    logs = data / "logs"
    # Two workers: uploads are validated while a long job trains. Their output goes to a log file each (at
    # DISTILLERY_LOG_LEVEL=debug, to this terminal with Celery's banners).
    names = ["jobs", "uploads"]
    argvs = [worker_argv(q, q, quiet=not debug, loglevel="DEBUG" if debug else "INFO") for q in names]
    workers = _Workers(argvs, names, None if debug else [logs / f"worker-{q}.log" for q in names])
    _Server = _server_class()
    server = _Server(uvicorn.Config("app.main:app", host=host, port=port, log_level="info" if debug else "warning"))
    url = f"http://{host}:{port}"
    warning = _sandbox_warning(settings)
    typer.echo(
        f"\nDistillery is up at {url}  (Ctrl-C stops it)\n"
        f"  dashboard  {url}/\n"
        f"  API docs   {url}/docs\n"
        f"  data       {data}\n"
        f"  workers    {', '.join(names)}"
        + (f"; logs in {logs}" if not debug else "")
        + "\n"
        + (f"\n{warning}\n" if warning else "")
        + f"\nAPI key (sign in to the dashboard with it; also in {data / 'api_key'}):\n{key}\n"
    )
    try:
        server.run(sockets=[sock])  # returns on SIGINT or SIGTERM
    finally:
        workers.stop()
        sock.close()
        typer.echo("Distillery stopped.")


class _Workers:
    """The worker processes of `up`, restarted when one dies (OOM killer, a stuck model's exit) until stop()."""

    def __init__(self, argvs: list[list[str]], names: list[str], logs: list[Path] | None = None):
        self.argvs, self.names, self.logs = argvs, names, logs
        self.procs = [self._start(i) for i in range(len(argvs))]
        self.started = [time.monotonic()] * len(argvs)
        self.delays = [1.0] * len(argvs)
        self.stopping = threading.Event()
        threading.Thread(target=self._supervise, name="worker-supervisor", daemon=True).start()

    def _start(self, i: int) -> subprocess.Popen:
        """Start worker i, its output appended to its log file (if it has one)."""
        if self.logs is None:
            return subprocess.Popen(self.argvs[i])
        self.logs[i].parent.mkdir(parents=True, exist_ok=True)
        with open(self.logs[i], "ab") as log:  # the child keeps its own descriptor
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting worker {self.names[i]}\n".encode())
            log.flush()
            return subprocess.Popen(self.argvs[i], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def _supervise(self) -> None:
        while not self.stopping.wait(1.0):
            for i, proc in enumerate(self.procs):
                code = proc.poll()
                if code is None or self.stopping.is_set():
                    continue
                # A worker that dies soon after starting waits longer each time (up to a minute): no busy loop.
                quick = time.monotonic() - self.started[i] < 30
                self.delays[i] = min(self.delays[i] * 2, 60.0) if quick else 1.0
                logger.warning(
                    "worker %s exited with code %s; restarting it in %.0f s%s",
                    self.names[i],
                    code,
                    self.delays[i],
                    f" (its log: {self.logs[i]})" if self.logs else "",
                )
                if self.stopping.wait(self.delays[i]):
                    return
                self.procs[i] = self._start(i)
                self.started[i] = time.monotonic()

    def stop(self) -> None:
        """SIGTERM every worker (a running job is handed back), then wait up to 30 s each."""
        self.stopping.set()
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant name (created if new)")], data_dir: DataDir = None
) -> None:
    """Create an API key and print it on its own line."""
    from app.auth import create_key
    from app.db import get_sessionmaker

    _configure(data_dir)
    _migrate()
    with get_sessionmaker()() as session:
        typer.echo(create_key(session, tenant))


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="The key, or its prefix as stored")], data_dir: DataDir = None
) -> None:
    """Revoke an API key."""
    from app.auth import revoke_key
    from app.db import get_sessionmaker

    _configure(data_dir)
    with get_sessionmaker()() as session:
        count = revoke_key(session, key)
    if not count:
        typer.echo("no live key matches", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {count} key(s)")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False)
def distill(ctx: typer.Context) -> None:
    """Run the engine on local files, no server: see `distillery distill --help`."""
    # The engine needs torch, which the API package never imports: the command lives with the worker.
    from worker.local import main as local_main

    raise typer.Exit(local_main(ctx.args))


@app.command()
def example(out: Annotated[Path, typer.Argument(help="Folder to write into")] = Path("example")) -> None:
    """Write a small trained teacher (teacher.pt) and data (train.npz, eval.npz, train.csv) to try with."""
    from worker.examples import write_example

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name, path in write_example(out).items():
        typer.echo(f"{name}: {path}")


from app.cli_client import register as _register_client  # noqa: E402 - run, jobs, models, datasets

_register_client(app)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
