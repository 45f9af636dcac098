"""The server's own commands: migrate, worker, api, keys, and the local `distill` and `example`.

Each imports app/ or worker/ inside itself (distillery_cli.server_extra): without `distillery[server]` it
exits 2 with the install hint, and the client commands never load the server.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from distillery_cli.server_extra import server_module

keys_app = typer.Typer(help="API keys.", no_args_is_help=True)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Folder for the SQLite database, embedded "
        "broker and files (default: DISTILLERY_DATA_DIR or ./.distillery)",
    ),
]


def configure(data_dir: Path | None, command: str) -> None:
    """Point this process and its children at one data directory, before settings are read."""
    settings = server_module("app.settings", command)
    logging.basicConfig(
        level=settings.Settings().log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    server_module("app.logredact", command).install_log_redaction()
    if data_dir is not None:
        os.environ["DISTILLERY_DATA_DIR"] = str(data_dir.resolve())
    settings.get_settings.cache_clear()
    settings.get_settings().data_dir.mkdir(parents=True, exist_ok=True)


def migrate_database() -> None:
    """Upgrade the configured database to the newest schema."""
    from app.migrate import upgrade
    from app.settings import get_settings

    upgrade(get_settings().resolved_database_url)


def migrate(data_dir: DataDir = None) -> None:
    """Migrate the database to the newest schema."""
    configure(data_dir, "migrate")
    server_module("app.migrate", "migrate")
    migrate_database()
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


def worker(
    data_dir: DataDir = None,
    queues: Annotated[
        str,
        typer.Option(
            help="Queues to serve; `jobs` means every job queue of this worker's resource class (jobs.cpu without a "
            "GPU, jobs.gpu .. jobs.gpuN with N GPUs; DISTILLERY_WORKER_GPUS declares N); add jobs.cpu to a GPU "
            "worker for CPU jobs too"
        ),
    ] = "jobs,uploads",
    name: Annotated[str, typer.Option(help="Worker name")] = "worker",
) -> None:
    """Start one worker (one per GPU; pin it with CUDA_VISIBLE_DEVICES)."""
    configure(data_dir, "worker")
    server_module("celery", "worker")  # fail here, with the hint, rather than in the exec'd Celery
    os.execv(sys.executable, worker_argv(queues, f"{name}-{os.getpid()}"))


def api(
    data_dir: DataDir = None,
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Start the HTTP API alone."""
    uvicorn = server_module("uvicorn", "api")
    configure(data_dir, "api")
    server_module("app.main", "api")
    from app.settings import get_settings

    settings = get_settings()
    uvicorn.run("app.main:app", host=host or settings.api_host, port=port or settings.api_port, log_level="info")


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant name (created if new)")], data_dir: DataDir = None
) -> None:
    """Create an API key and print it on its own line."""
    configure(data_dir, "keys create")
    auth, db = server_module("app.auth", "keys create"), server_module("app.db", "keys create")
    migrate_database()
    with db.get_sessionmaker()() as session:
        typer.echo(auth.create_key(session, tenant))


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="The key, or its prefix as stored")], data_dir: DataDir = None
) -> None:
    """Revoke an API key."""
    configure(data_dir, "keys revoke")
    auth, db = server_module("app.auth", "keys revoke"), server_module("app.db", "keys revoke")
    with db.get_sessionmaker()() as session:
        count = auth.revoke_key(session, key)
    if not count:
        typer.echo("no live key matches", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {count} key(s)")


def distill(ctx: typer.Context) -> None:
    """Run the engine on local files, no server: see `distillery distill --help`."""
    # The engine needs torch, which the API never imports: the command lives with the worker.
    local = server_module("worker.local", "distill")
    raise typer.Exit(local.main(ctx.args))


def example(out: Annotated[Path, typer.Argument(help="Folder to write into")] = Path("example")) -> None:
    """Write a small trained teacher (teacher.pt) and data (train.npz, eval.npz, train.csv) to try with."""
    examples = server_module("worker.examples", "example")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name, path in examples.write_example(out).items():
        typer.echo(f"{name}: {path}")
