"""`distillery up`: the API, two workers, SQLite and an embedded broker on this machine, with a short banner."""

from __future__ import annotations

import contextlib
import errno
import logging
import shutil
import signal
import socket
import subprocess
from typing import Annotated

import typer

from distillery_cli.server_commands import DataDir, configure, migrate_database, worker_argv
from distillery_cli.server_extra import server_module
from distillery_cli.worker_processes import Workers


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


def _server_class(uvicorn):
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
    """A socket bound to host:port for the API (uvicorn listens on it), or exit 1 saying how to pick another."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a TIME_WAIT port is free
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            message = (
                f"port {port} on {host} is already in use (another `distillery up`, or another program); "
                f"start on another port with --port, e.g. `distillery up --port {port + 1}`"
            )
        else:
            message = f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --host or --port"
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(1) from None
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


def _banner(url: str, settings, names: list[str], key: str, debug: bool) -> str:
    data = settings.data_dir.resolve()
    warning = _sandbox_warning(settings)
    return (
        f"\nDistillery is up at {url}  (Ctrl-C stops it)\n"
        f"  dashboard  {url}/\n"
        f"  API docs   {url}/docs\n"
        f"  data       {data}\n"
        f"  workers    {', '.join(names)}"
        + (f"; logs in {data / 'logs'}" if not debug else "")
        + "\n"
        + (f"\n{warning}\n" if warning else "")
        + f"\nAPI key (sign in to the dashboard with it; also in {data / 'api_key'}):\n{key}\n"
    )


def up(
    data_dir: DataDir = None,
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Start everything on this machine: API, workers, SQLite and an embedded broker; Ctrl-C stops it."""
    uvicorn = server_module("uvicorn", "up")
    configure(data_dir, "up")
    from app.settings import get_settings

    settings = get_settings()
    debug = settings.log_level.upper() == "DEBUG"
    if not debug:  # the banner is what a user reads; alembic's plugin lines and the migration's steps are not
        for name in ("alembic", "app.migrate"):
            logging.getLogger(name).setLevel(logging.WARNING)
    for module in ("app.main", "app.migrate", "app.auth", "celery"):
        server_module(module, "up")  # every server package is there before anything is printed or started
    host, port = host or settings.api_host, port or settings.api_port
    sock = _listen(host, port)  # before anything is printed or created: a taken port says so, and how to pick another
    migrate_database()
    key = _default_key()
    logs = settings.data_dir.resolve() / "logs"
    # Two workers: uploads are validated while a long job trains. Their output goes to a log file each (at
    # DISTILLERY_LOG_LEVEL=debug, to this terminal with Celery's banners). The one job worker serves every resource
    # class this machine can: its own (`jobs`), and CPU jobs too when it has a GPU (jobs.cpu).
    queues = {"jobs": "jobs,jobs.cpu", "uploads": "uploads"}
    names = list(queues)
    argvs = [worker_argv(queues[n], n, quiet=not debug, loglevel="DEBUG" if debug else "INFO") for n in names]
    server = _server_class(uvicorn)(
        uvicorn.Config("app.main:app", host=host, port=port, log_level="info" if debug else "warning")
    )
    # A Ctrl-C or SIGTERM from here on (a script that stops `up` as soon as the banner shows) asks the server to
    # stop, which it does right after startup, instead of killing `up` with its workers still running.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, server.handle_exit)
    workers = Workers(argvs, names, None if debug else [logs / f"worker-{q}.log" for q in names])
    typer.echo(_banner(f"http://{host}:{port}", settings, names, key, debug))
    try:
        server.run(sockets=[sock])  # returns on SIGINT or SIGTERM
    finally:
        workers.stop()
        sock.close()
        typer.echo("Distillery stopped.")
