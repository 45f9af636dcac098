"""Child-process entry point that opens one upload and prints what it is, as JSON on stdout.

Model files can carry code, so they are opened here, in a process of their own with a time limit,
not in the worker; a crash or a hang ends only this process. Errors that leave this process are scrubbed:
a short message, no stack, no absolute path (a path is replaced by its file name).
"""

from __future__ import annotations

import json
import logging
import re
import sys

MAX_MESSAGE_CHARS = 500
# An absolute path: a '/' that starts a token, followed by at least one more segment (/a/b, /tmp/x.npz).
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])/(?:[^\s/'\"`,;:()\[\]{}<>]+/)+[^\s/'\"`,;:()\[\]{}<>]*")
_WINDOWS_PATH = re.compile(r"\b[A-Za-z]:\\(?:[^\s\\'\"`,;:()\[\]{}<>]+\\)*[^\s\\'\"`,;:()\[\]{}<>]*")


def scrub(message: str) -> str:
    """One short line: absolute paths replaced by their file name, a stack cut to its last line, bounded length."""
    text = str(message)
    if "Traceback (most recent call last)" in text:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        text = text.split("Traceback (most recent call last)")[0] + " " + (lines[-1] if lines else "")
    text = _ABSOLUTE_PATH.sub(lambda m: _basename(m.group(0), "/"), text)
    text = _WINDOWS_PATH.sub(lambda m: _basename(m.group(0), "\\"), text)
    text = " ".join(text.split())
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 3].rstrip() + "..."
    return text


def _basename(path: str, sep: str) -> str:
    return path.rstrip(sep).rsplit(sep, 1)[-1] or "<path>"


def main() -> int:
    """`python -m worker.inspect_child KIND PATH OPTIONS_JSON` -> {"info": ...} or {"error": ...}.

    For datasets, OPTIONS_JSON holds DatasetSpec fields and optionally "limits" (DataLimits.to_dict()).
    """
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    kind, path, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    try:
        out = {"info": _inspect(kind, path, options)}
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - a library's panic too (pyo3's PanicException is a BaseException)
        out = {"error": _error(kind, exc)}
    sys.stdout.write("\n" + json.dumps(out) + "\n")
    return 0


def _inspect(kind: str, path: str, options: dict) -> dict | None:
    from worker.engine import DatasetSpec, inspect_dataset, inspect_model
    from worker.engine.limits import DataLimits
    from worker.onnx_check import external_data_problem

    if kind == "models":
        problem = external_data_problem(path)
        if problem:
            raise _Reported(problem)
        return inspect_model(path)
    options = dict(options or {})
    limits = DataLimits.from_dict(options.pop("limits", None))
    return inspect_dataset(DatasetSpec(path=path, **options), limits)


class _Reported(Exception):
    """An error already shaped as {"code", "message"}."""

    def __init__(self, error: dict):
        super().__init__(error.get("message", ""))
        self.error = error


def _error(kind: str, exc: BaseException) -> dict:
    from worker.engine import EngineError

    if isinstance(exc, _Reported):
        return {"code": exc.error.get("code", f"invalid_{kind[:-1]}"), "message": scrub(exc.error.get("message", ""))}
    if isinstance(exc, EngineError):
        return {"code": exc.code, "message": scrub(exc.message)}
    if isinstance(exc, MemoryError):
        return {"code": "limit_exceeded", "message": "opening the file needed more memory than this server allows"}
    if isinstance(exc, RecursionError):
        return {"code": f"invalid_{kind[:-1]}", "message": "the file is nested too deeply to read"}
    # Anything else is still the file's fault, reported as such: the exception's type and a scrubbed message.
    detail = scrub(str(exc))
    message = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return {"code": f"invalid_{kind[:-1]}", "message": message}


if __name__ == "__main__":
    sys.exit(main())
