"""The `distillery` command: the typer app that gathers every command, and the console script's main()."""

from __future__ import annotations

import typer

from distillery_cli import server_commands
from distillery_cli.job_commands import jobs_app
from distillery_cli.run_command import run
from distillery_cli.up_command import up
from distillery_cli.upload_commands import datasets_app, models_app
from distillery_cli.webhook_commands import webhooks_app

app = typer.Typer(
    help="Distillery: knowledge distillation as a service.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# Server commands (they need `distillery[server]`)
app.command()(server_commands.migrate)
app.command()(server_commands.worker)
app.command()(server_commands.api)
app.command()(up)
app.add_typer(server_commands.keys_app, name="keys")
app.add_typer(webhooks_app, name="webhooks")
app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False)(
    server_commands.distill
)
app.command()(server_commands.example)
# Client commands (a running service, through distillery_client)
app.command("run")(run)
app.add_typer(jobs_app, name="jobs")
app.add_typer(models_app, name="models")
app.add_typer(datasets_app, name="datasets")


def main() -> None:
    """Console-script entry point."""
    app()
