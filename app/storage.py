"""The artifact store: a local folder laid out by tenant, or an S3-compatible object store (app/object_store.py).

`app.stores.open_storage(settings)` picks the one the settings name. Rows keep store-relative paths;
`local_path` gives a file on this machine (the object store fetches it into a local cache), `keep_job_file`
stores a job's output.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from app.settings import Settings

# The stored file's name by format: the routes name uploads so, and the validating worker finds them so (kept here,
# not in the routes, whose sniffers import numpy, which the worker process must never import).
MODEL_FILES = {"torchscript": "model.pt", "pt2": "model.pt2", "onnx": "model.onnx", "hf": "model.hf"}
DATASET_FILES = {
    "npz": "data.npz",
    "csv": "data.csv",
    "jsonl": "data.jsonl",
    "parquet": "data.parquet",
    "image_folder": "data.zip",
}


class ChecksumMismatch(Exception):
    """A stored file's bytes hash to another sha256 than the one declared for them."""

    def __init__(self, declared: str, actual: str):
        super().__init__(f"the stored file's sha256 is {actual}, not the declared {declared}")
        self.declared, self.actual = declared, actual


class LocalStorage:
    """Files under one root folder; rows keep paths relative to it."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalStorage:
        """The store configured by the settings."""
        return cls(settings.resolved_storage_dir)

    @property
    def tmp_dir(self) -> Path:
        """Where partial uploads are written; same filesystem as the store, so moves are atomic."""
        return self.root / "tmp"

    def path(self, relative: str) -> Path:
        """The absolute path of a stored file; refuses anything that would leave the root."""
        full = (self.root / relative).resolve()
        if not full.is_relative_to(self.root):
            raise ValueError(f"path {relative!r} leaves the storage root")
        return full

    def put(self, source: Path, relative: str) -> Path:
        """Move a finished file into the store under `relative` (atomic rename on one filesystem)."""
        dest = self.path(relative)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, dest)
        return dest

    def local_path(self, relative: str) -> Path:
        """A readable local file of a stored path (here: the file itself)."""
        return self.path(relative)

    def verified_local_path(self, relative: str, sha256: str) -> Path:
        """local_path, after checking that the file's bytes hash to `sha256` (ChecksumMismatch if not)."""
        path = self.local_path(relative)
        actual = sha256_file(path)
        if actual != sha256:
            raise ChecksumMismatch(sha256, actual)
        return path

    def exists(self, relative: str) -> bool:
        """Whether the stored file is there."""
        return self.path(relative).is_file()

    def keep_job_file(self, full: Path) -> str:
        """A file a job wrote (an artifact, a checkpoint) stays where it is; its store-relative path."""
        return self.relative(full)

    def upload_dir(self, tenant_id: str, kind: str, obj_id: str) -> str:
        """Relative folder of an uploaded model or dataset."""
        return f"{tenant_id}/{kind}/{obj_id}"

    def job_dir(self, tenant_id: str, job_id: str) -> Path:
        """Absolute folder of one job's work files, checkpoints and artifacts."""
        return self.path(f"{tenant_id}/jobs/{job_id}")

    def cache_dir(self, tenant_id: str) -> Path:
        """Per-tenant cache of teacher outputs: never shared across tenants."""
        return self.path(f"{tenant_id}/cache/teacher_outputs")

    def teacher_cache_dir(self, tenant_id: str, teacher_sha256: str) -> Path:
        """The tenant's cached outputs of one teacher (by its bytes' sha256): what a job's child may read and
        write, and what an object store keeps for workers on other machines."""
        if len(teacher_sha256) != 64 or not all(c in "0123456789abcdef" for c in teacher_sha256):
            raise ValueError(f"not a sha256: {teacher_sha256!r}")
        return self.cache_dir(tenant_id) / teacher_sha256

    def relative(self, full: Path) -> str:
        """The store-relative form of an absolute path inside the root."""
        return str(Path(full).resolve().relative_to(self.root))

    def remove_tree(self, relative: str) -> None:
        """Delete a stored folder (missing is fine)."""
        shutil.rmtree(self.path(relative), ignore_errors=True)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
