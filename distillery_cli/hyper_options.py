"""`distillery run`'s hyperparameter flags, one per row of contract.HYPERPARAMETERS (as `distill` has), and
their values checked by the API's own model before any byte is sent."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.markup import escape

from contract import HYPERPARAMETERS, Hyperparameter
from contract.wire import Hyperparameters
from distillery_cli.output import fail, validation_text

NULLS = ("null", "none")


def _flag(hp: Hyperparameter) -> str:
    return "--" + hp.name.replace("_", "-")


def _parameter(hp: Hyperparameter) -> inspect.Parameter:
    """A keyword parameter whose typer option is the row's flag; None (the default) leaves the setting out."""
    help_text = hp.describe()
    if hp.type is bool:
        annotation: Any = Annotated[bool | None, typer.Option(f"{_flag(hp)}/--no-{_flag(hp)[2:]}", help=hp.help)]
    elif hp.type is dict or hp.nullable:  # JSON, or a number that may be 'null': parsed in hyperparameters()
        kind = 'JSON, e.g. {"noise": 0.1}' if hp.type is dict else "'null' for none"
        annotation = Annotated[str | None, typer.Option(_flag(hp), help=f"{help_text} ({kind})")]
    else:
        annotation = Annotated[hp.type | None, typer.Option(_flag(hp), help=help_text)]
    return inspect.Parameter(hp.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)


def with_hyperparameter_options(func: Callable) -> Callable:
    """Give a command that takes `**hyperparameters` one option per hyperparameter (typer reads __signature__)."""
    signature = inspect.signature(func, eval_str=True)
    fixed = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in fixed]
    # In --help, the hyperparameters come before --force, --url and --api-key.
    at = next((i for i, p in enumerate(keyword) if p.name in ("force", "url")), len(keyword))
    hyper = [_parameter(hp) for hp in HYPERPARAMETERS]
    func.__signature__ = signature.replace(parameters=keyword[:at] + hyper + keyword[at:])
    return func


def _parse(hp: Hyperparameter, text: str) -> Any:
    if text.strip().lower() in NULLS:
        return None
    return json.loads(text) if hp.type is dict else hp.type(text)


def hyperparameters(options: dict[str, Any]) -> dict[str, Any]:
    """The flags given, as the API's `hyperparameters` object, checked; exits 2 with one line naming the flag."""
    values: dict[str, Any] = {}
    for hp in HYPERPARAMETERS:
        value = options.get(hp.name)
        if value is None:
            continue
        try:
            values[hp.name] = _parse(hp, value) if isinstance(value, str) and hp.type is not str else value
        except ValueError as exc:
            raise _refuse(f"{_flag(hp)}: {exc}") from None
    try:
        Hyperparameters.model_validate(values)
    except (ValueError, ValidationError) as exc:
        raise _refuse(validation_text(exc, "hyperparameters")) from None
    return values


def _refuse(message: str) -> typer.Exit:
    return fail(escape(message), 2)
