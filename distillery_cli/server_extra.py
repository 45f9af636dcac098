"""The server's packages (app/, worker/ and their dependencies) for the commands that need them, imported
inside the command, so that the client and the CLI install without them."""

from __future__ import annotations

import importlib
from types import ModuleType

import typer

INSTALL_HINT = "pip install 'distillery[server]'"


def server_module(name: str, command: str) -> ModuleType:
    """Import a module of app/ or worker/, or exit 2 with one line saying to install distillery[server]."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or str(exc)
        typer.echo(
            f"error: `distillery {command}` needs the server's packages ({missing} is not installed): {INSTALL_HINT}",
            err=True,
        )
        raise typer.Exit(2) from None
