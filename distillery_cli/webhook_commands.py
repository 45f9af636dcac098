"""`distillery webhooks ...`: the tenant's webhook signing secret, from the server's own database."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from distillery_cli.server_commands import configure
from distillery_cli.server_extra import server_module

webhooks_app = typer.Typer(help="Webhooks (Standard Webhooks signatures).", no_args_is_help=True)


@webhooks_app.command("secret")
def secret(
    tenant: Annotated[str, typer.Option(help="Tenant name")] = "default",
    rotate: Annotated[bool, typer.Option("--rotate", help="Make a new secret first")] = False,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Data folder (see `up`)")] = None,
) -> None:
    """Print the tenant's webhook signing secret (whsec_...); --rotate makes a new one first."""
    configure(data_dir, "webhooks secret")
    sqlalchemy = server_module("sqlalchemy", "webhooks secret")
    db, webhooks = server_module("app.db", "webhooks secret"), server_module("app.webhooks", "webhooks secret")
    from app.models import Tenant

    with db.get_sessionmaker()() as session:
        row = session.scalar(sqlalchemy.select(Tenant).where(Tenant.name == tenant))
        if row is None:
            typer.echo(f"no tenant named {tenant!r} (create one with `distillery keys create --tenant NAME`)", err=True)
            raise typer.Exit(1)
        typer.echo(webhooks.rotate_secret(session, row) if rotate else webhooks.tenant_secret(session, row))
