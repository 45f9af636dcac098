"""A Celery worker whose own process may not load anything: the trust boundary's rule, enforced at run time.

`python tests/support/guarded_worker.py MARK_FILE CELERY_ARGS...` replaces, before the worker imports anything of
ours, every function that opens a model, a dataset or a tokenizer (torch.jit.load, torch.export.load, torch.load,
onnx.load, onnxruntime.InferenceSession, numpy.load, tokenizers.Tokenizer.from_file, safetensors' loaders,
pickle.load/loads) with one that appends its name to MARK_FILE and raises. A job that succeeds under this worker
was loaded only in its sandboxed child, which is a fresh interpreter the patches do not reach.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
MARK = sys.argv.pop(1)


def _refuse(name: str):
    def refused(*_args, **_kwargs):
        with open(MARK, "a") as fh:
            fh.write(name + "\n")
        raise RuntimeError(f"the worker process called {name}")

    return refused


def install() -> list[str]:
    """Patch the loaders; returns their names."""
    import pickle

    import numpy
    import onnx
    import onnxruntime
    import safetensors
    import safetensors.numpy
    import safetensors.torch
    import tokenizers
    import torch
    import torch.export

    class RefusedTokenizer:
        from_file = staticmethod(_refuse("tokenizers.Tokenizer.from_file"))
        from_str = staticmethod(_refuse("tokenizers.Tokenizer.from_str"))

    targets = [
        (torch.jit, "load"),
        (torch.export, "load"),
        (torch, "load"),
        (onnx, "load"),
        (onnx, "load_model"),
        (onnxruntime, "InferenceSession"),
        (numpy, "load"),
        (safetensors.torch, "load_file"),
        (safetensors.numpy, "load_file"),
        (safetensors, "safe_open"),
        (pickle, "load"),
        (pickle, "loads"),
    ]
    names = []
    for module, attr in targets:
        name = f"{module.__name__}.{attr}"
        setattr(module, attr, _refuse(name))
        names.append(name)
    tokenizers.Tokenizer = RefusedTokenizer
    names.append("tokenizers.Tokenizer.from_file")
    return names


if __name__ == "__main__":
    install()
    from celery.__main__ import main

    sys.argv = ["celery", *sys.argv[1:]]
    sys.exit(main())
