"""Child-process entry point that opens one upload and prints what it is, as JSON on stdout.

Model files can carry code, so they are opened here, in a process of their own with a time limit,
not in the worker; a crash or a hang ends only this process.
"""

from __future__ import annotations

import json
import logging
import sys


def main() -> int:
    """`python -m worker.inspect_child KIND PATH OPTIONS_JSON` -> {"info": ...} or {"error": ...}."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    kind, path, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    from worker.engine import DatasetSpec, EngineError, inspect_dataset, inspect_model
    from worker.onnx_check import external_data_problem

    try:
        problem = external_data_problem(path) if kind == "models" else None
        if problem:
            sys.stdout.write("\n" + json.dumps({"error": problem}) + "\n")
            return 0
        if kind == "models":
            info = inspect_model(path)
        else:
            info = inspect_dataset(DatasetSpec(path=path, **options))
        out = {"info": info}
    except EngineError as exc:
        out = {"error": {"code": exc.code, "message": exc.message}}
    except Exception as exc:  # anything else is still the file's fault, reported as such
        out = {"error": {"code": f"invalid_{kind[:-1]}", "message": f"{type(exc).__name__}: {exc}"}}
    sys.stdout.write("\n" + json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
