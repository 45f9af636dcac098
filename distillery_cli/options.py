"""Options the client commands share (service URL, API key, --json, --force) and the client they make."""

from __future__ import annotations

from typing import Annotated

import typer

from distillery_client import Distillery

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url", envvar="DISTILLERY_URL", show_envvar=True, help="Service URL (default http://127.0.0.1:8000)"
    ),
]
KeyOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="DISTILLERY_API_KEY",
        show_envvar=True,
        show_default=False,
        help="API key (default: .distillery/api_key)",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts")]
JobId = Annotated[str, typer.Argument(help="Job id")]
ForceOpt = typer.Option("--force", metavar="", help="Write into --out even when it holds other files (another job's)")


def make_client(url: str | None, api_key: str | None) -> Distillery:
    """The SDK client for --url and --api-key (else DISTILLERY_URL, DISTILLERY_API_KEY, .distillery/api_key)."""
    return Distillery(url, api_key)
