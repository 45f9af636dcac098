"""How the CLI prints: results on stdout (tables, JSON), progress and messages on stderr; numbers and errors.

Exit codes: 0 done, 1 the API answered an error or the job did not succeed, 2 bad arguments, 130 interrupted.
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from distillery_client import DistilleryError

out = Console()  # results (tables, JSON) on stdout
err = Console(stderr=True)  # progress and messages on stderr, so that stdout stays parseable

_PYDANTIC_PREFIXES = ("Value error, ", "Assertion failed, ")


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print 'error: <message>' (markup allowed; escape what came from outside) and return the Exit to raise."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, markup=True, soft_wrap=True)
    return typer.Exit(code)


def api_errors(func):
    """Turn DistilleryError into 'error: <the API's message>' and exit 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except DistilleryError as exc:
            detail = f" ({exc.status} {exc.code})" if exc.status else ""
            raise fail(escape(exc.message) + detail) from None

    return wrapper


def print_json(value: Any) -> None:
    """Indented JSON on stdout."""
    sys.stdout.write(json.dumps(value, indent=2) + "\n")
    sys.stdout.flush()


def dump(obj) -> Any:
    """A model (or a list of them) as JSON-ready values."""
    if isinstance(obj, list):
        return [dump(o) for o in obj]
    return obj.model_dump(mode="json") if hasattr(obj, "model_dump") else obj


def num(value: Any, decimals: int = 4) -> str:
    """A number for a table: floats with `decimals`, ints with thousands separators, '—' for missing."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{decimals}f}"
    return str(value)


def human_bytes(n: Any) -> str:
    """1536 -> '1.5 KiB'."""
    if not isinstance(n, int | float):
        return "—"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return "—"


def ratio(value: Any) -> str:
    """A ratio with one decimal: 86.5630 -> '86.6×'."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "—"
    return f"{value:.1f}×"


def validation_text(exc: Exception, where: str) -> str:
    """'student: architecture must be one of ...', '--epochs: ...': no pydantic wording, no 'value:'."""
    if not isinstance(exc, ValidationError):
        return f"{where}: {exc}"
    lines = []
    for e in exc.errors():
        msg = str(e["msg"])
        for prefix in _PYDANTIC_PREFIXES:
            msg = msg.removeprefix(prefix)
        loc = ".".join(map(str, e["loc"]))
        if where == "hyperparameters" and loc:
            name = f"--{str(e['loc'][0]).replace('_', '-')}" + "".join(f".{x}" for x in e["loc"][1:])
        else:
            name = f"{where}.{loc}" if loc else where
        lines.append(f"{name}: {msg}")
    return "; ".join(lines)
