"""Run Python as if only `pip install distillery` (no server extra) were installed.

    python tests/support/no_server.py ARGS...           # the `distillery` command, e.g. `jobs list`
    python tests/support/no_server.py --import MODULE    # import one module and exit 0

A `sys.meta_path` finder placed first refuses the server's packages (and app/, worker/) with the ImportError a
missing package gives, so the client and the CLI are shown to work without them.
"""

from __future__ import annotations

import importlib
import runpy
import sys

SERVER_ONLY = (
    "fastapi",
    "starlette",
    "sqlalchemy",
    "celery",
    "kombu",
    "torch",
    "numpy",
    "alembic",
    "uvicorn",
    "pydantic_settings",
    "onnx",
    "onnxruntime",
    "app",
    "worker",
)


class RefuseServerPackages:
    """A meta path finder that answers every server package with ModuleNotFoundError."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in SERVER_ONLY:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def main() -> None:
    """Install the finder, then import a module or run `distillery` with the remaining arguments."""
    sys.meta_path.insert(0, RefuseServerPackages())
    if sys.argv[1:2] == ["--import"]:
        importlib.import_module(sys.argv[2])
        return
    sys.argv = ["distillery", *sys.argv[1:]]
    runpy.run_module("distillery_cli", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
