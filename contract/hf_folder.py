"""A Hugging Face model folder uploaded as one archive (what `save_pretrained` writes, zipped or tarred).

The rules on member names, shared by the API (which reads only the archive's directory) and the validation
child (which reads the members themselves, in the sandbox): the folder is recognised by its `config.json`;
weights must be safetensors (pickle weights can run code when loaded); no Python code (a model that needs
`trust_remote_code` runs code of the uploader's choosing). Plain Python.
"""

from __future__ import annotations

import posixpath

SAFE_WEIGHTS = (".safetensors",)
PICKLE_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
CODE = (".py", ".pyc", ".pyo", ".so", ".pyd", ".dll", ".dylib")
MAX_MEMBERS = 10_000
SAVE_HINT = (
    "save it with model.save_pretrained(folder) and tokenizer.save_pretrained(folder) (safetensors is the "
    "default) and upload the folder as one zip or tar"
)


def folder_root(names: list[str]) -> str | None:
    """The folder inside the archive that holds config.json ("" at the top, or one top-level folder); None if none."""
    roots = sorted(
        (posixpath.dirname(n) for n in names if posixpath.basename(n) == "config.json" and n.count("/") <= 1),
        key=len,
    )
    return (roots[0] + "/" if roots[0] else "") if roots else None


def folder_files(names: list[str], root: str) -> list[str]:
    """The folder's file names relative to its root (directories left out)."""
    return [n[len(root) :] for n in names if n.startswith(root) and not n.endswith("/") and n != root]


def folder_problem(files: list[str]) -> str | None:
    """Why a Hugging Face folder is refused by its file names alone; None when the names are acceptable."""
    if len(files) > MAX_MEMBERS:
        return f"the folder has {len(files)} files; at most {MAX_MEMBERS} are accepted"
    code = [f for f in files if f.lower().endswith(CODE)]
    if code:
        return (
            f"the folder holds code ({', '.join(sorted(code)[:3])}): custom model code (trust_remote_code) is "
            "refused; only architectures the installed transformers implements run here"
        )
    if not any(f.lower().endswith(SAFE_WEIGHTS) for f in files):
        pickled = sorted(f for f in files if f.lower().endswith(PICKLE_WEIGHTS))
        if pickled:
            return (
                f"the weights are only in pickle files ({', '.join(pickled[:3])}), which are refused: loading a "
                f"pickle can run code; {SAVE_HINT}"
            )
        return (
            f"the folder has no weights (model.safetensors, or shards with model.safetensors.index.json); {SAVE_HINT}"
        )
    return None
