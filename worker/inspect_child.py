"""Child-process entry point that opens one upload and prints what it is, as JSON on stdout.

Model files can carry code, so they are opened here, in a process of their own with a time limit,
not in the worker; a crash or a hang ends only this process. Errors that leave this process are scrubbed:
a short message, no stack, no absolute path (a path is replaced by its file name).
"""

from __future__ import annotations

import json
import logging
import sys

MAX_MESSAGE_CHARS = 500


def scrub(message: str) -> str:
    """One short line: absolute paths replaced by their file name, a stack cut to its last line, bounded length."""
    from worker.scrub import scrub_message

    return scrub_message(message, MAX_MESSAGE_CHARS)


def main() -> int:
    """`python -m worker.inspect_child KIND PATH OPTIONS_JSON` -> {"info": ...} or {"error": ...}.

    For datasets, OPTIONS_JSON holds DatasetSpec fields and optionally "limits" (DataLimits.to_dict()).
    """
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    kind, path, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    try:
        out = {"info": _sniff(kind, path, options) if options.pop("sniff", False) else _inspect(kind, path, options)}
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - a library's panic too (pyo3's PanicException is a BaseException)
        out = {"error": _error(kind, exc)}
    sys.stdout.write("\n" + json.dumps(out) + "\n")
    return 0


def _sniff(kind: str, path: str, options: dict) -> dict:
    """{"format": ...} of a file sent straight to the store, recognised as the API recognises an upload it
    receives (app/sniff.py): the same formats are accepted and the same content refused, with the same words."""
    from pathlib import Path

    from app.errors import ApiError
    from app.sniff import sniff_dataset, sniff_model

    try:
        fmt = sniff_model(Path(path)) if kind == "models" else sniff_dataset(Path(path), options)
    except ApiError as exc:
        raise _Reported({"code": exc.code, "message": exc.message}) from None
    return {"format": fmt}


def _inspect(kind: str, path: str, options: dict) -> dict | None:
    from worker.engine import DatasetSpec, EngineError, inspect_dataset, inspect_model
    from worker.engine.limits import DataLimits
    from worker.onnx_check import external_data_problem

    if kind == "models":
        problem = external_data_problem(path)
        if problem:
            raise _Reported(problem)
        return inspect_model(path)
    options = dict(options or {})
    limits = DataLimits.from_dict(options.pop("limits", None))
    spec = DatasetSpec(path=path, **options)
    try:
        info = inspect_dataset(spec, limits)
    except EngineError as exc:
        hints = _refusal_hints(spec) if exc.code == "invalid_dataset" else []
        if hints:
            raise _Reported({"code": exc.code, "message": "; ".join([exc.message, *hints])}) from None
        raise
    return {**info, **_describe_columns(spec, info)}


def _describe_columns(spec, info: dict) -> dict:
    """The info's `schema` (columns with their kind) and `warnings`, for a table; never fails the validation."""
    from worker.engine.columns import TABLE_FORMATS, sample_table
    from worker.engine.dataset_hints import dataset_warnings

    if spec.format not in TABLE_FORMATS or info.get("kind") == "prompts":
        return {"warnings": []}
    try:
        sample = sample_table(spec.path, spec.format)
    except Exception:  # noqa: BLE001 - the dataset loaded; a description that cannot be made is only left out
        logging.getLogger(__name__).warning("could not describe the columns", exc_info=True)
        return {"warnings": []}
    return {"schema": sample.schema(), "warnings": dataset_warnings(sample, info, spec.label_column, spec.text_column)}


def _refusal_hints(spec) -> list[str]:
    """What to change when a table is refused: the columns that look like labels or text, if any."""
    from worker.engine.columns import TABLE_FORMATS, sample_table
    from worker.engine.dataset_hints import refusal_hints

    if spec.format not in TABLE_FORMATS:
        return []
    try:
        sample = sample_table(spec.path, spec.format)
    except Exception:  # noqa: BLE001 - the refusal stands without hints
        return []
    return refusal_hints(sample, spec.label_column, spec.text_column)


class _Reported(Exception):
    """An error already shaped as {"code", "message"}."""

    def __init__(self, error: dict):
        super().__init__(error.get("message", ""))
        self.error = error


def _error(kind: str, exc: BaseException) -> dict:
    from worker.engine import EngineError
    from worker.scrub import looks_like_out_of_memory

    if isinstance(exc, MemoryError) or looks_like_out_of_memory(str(exc)):
        # Before any scrubbing or cutting: the allocator's words are often at the end of a long message.
        return {
            "code": "sandbox_memory_limit",
            "message": "opening the file needed more memory than this server allows one upload",
        }
    if isinstance(exc, _Reported):
        return {"code": exc.error.get("code", f"invalid_{kind[:-1]}"), "message": scrub(exc.error.get("message", ""))}
    if isinstance(exc, EngineError):
        return {"code": exc.code, "message": scrub(exc.message)}
    if isinstance(exc, RecursionError):
        return {"code": f"invalid_{kind[:-1]}", "message": "the file is nested too deeply to read"}
    # Anything else is still the file's fault, reported as such: the exception's type and a scrubbed message.
    detail = scrub(str(exc))
    message = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return {"code": f"invalid_{kind[:-1]}", "message": message}


if __name__ == "__main__":
    sys.exit(main())
