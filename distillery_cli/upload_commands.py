"""`distillery models ...` and `distillery datasets ...`: list and delete uploads of a running service."""

from __future__ import annotations

from typing import Annotated

import typer

from distillery_cli import options
from distillery_cli.options import JsonOpt, KeyOpt, UrlOpt
from distillery_cli.output import api_errors, dump, out, print_json
from distillery_cli.tables import uploads_table

models_app = typer.Typer(help="Uploaded models.", no_args_is_help=True)
datasets_app = typer.Typer(help="Uploaded datasets.", no_args_is_help=True)
LimitOpt = Annotated[int, typer.Option(help="How many, newest first")]


@models_app.command("list")
@api_errors
def models_list(limit: LimitOpt = 20, as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """List uploaded models, newest first."""
    rows = options.make_client(url, api_key).list_models(limit=limit)
    if as_json:
        print_json(dump(rows))
    else:
        out.print(uploads_table(rows))


@datasets_app.command("list")
@api_errors
def datasets_list(limit: LimitOpt = 20, as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """List uploaded datasets, newest first."""
    rows = options.make_client(url, api_key).list_datasets(limit=limit)
    if as_json:
        print_json(dump(rows))
    else:
        out.print(uploads_table(rows))


@models_app.command("delete")
@api_errors
def models_delete(
    model_ids: Annotated[list[str], typer.Argument(help="Model ids")], url: UrlOpt = None, api_key: KeyOpt = None
) -> None:
    """Delete uploaded models (409 while a queued or running job uses one)."""
    client = options.make_client(url, api_key)
    for model_id in model_ids:
        client.delete_model(model_id)
        out.print(f"deleted {model_id}", highlight=False)


@datasets_app.command("delete")
@api_errors
def datasets_delete(
    dataset_ids: Annotated[list[str], typer.Argument(help="Dataset ids")],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Delete uploaded datasets (409 while a queued or running job uses one)."""
    client = options.make_client(url, api_key)
    for dataset_id in dataset_ids:
        client.delete_dataset(dataset_id)
        out.print(f"deleted {dataset_id}", highlight=False)
