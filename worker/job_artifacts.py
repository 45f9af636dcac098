"""Artifact rows for the files a job child left in its folder; the child is untrusted, so only plain files count."""

from __future__ import annotations

import logging
import re
import stat
from pathlib import Path

from sqlalchemy.orm import Session

from app.models import Artifact
from app.storage import LocalStorage, sha256_file

logger = logging.getLogger(__name__)

ARTIFACT_FORMATS = {
    ".pt": "torchscript",
    ".pt2": "pt2",
    ".onnx": "onnx",
    ".safetensors": "safetensors",
    ".json": "json",
    ".html": "html",
}
MAX_ARTIFACTS = 64
ARTIFACT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def artifact_format(name: str) -> str:
    """The format an artifact's file name says (the child named it; nothing is read)."""
    if name.endswith(".int8.onnx"):
        return "int8-onnx"
    return ARTIFACT_FORMATS.get(Path(name).suffix, "file")


def record_artifacts(session: Session, job_id: str, out_dir: Path, storage: LocalStorage) -> None:
    """One artifact row per file the job child wrote, with size and sha256 (committed by the caller).

    Only plain files with plain names count (never a link, which could point at another tenant's file, nor a
    hard link), and at most MAX_ARTIFACTS of them.
    """
    if not out_dir.is_dir() or out_dir.is_symlink():
        return
    kept = 0
    for path in sorted(out_dir.iterdir()):
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or not ARTIFACT_NAME.match(path.name):
            logger.warning("job %s: %r in its artifacts is not a plain file; ignored", job_id, path.name)
            continue
        if kept >= MAX_ARTIFACTS:
            logger.warning("job %s wrote more than %d artifacts; the rest are ignored", job_id, MAX_ARTIFACTS)
            break
        kept += 1
        session.add(
            Artifact(
                job_id=job_id,
                name=path.name,
                format=artifact_format(path.name),
                size_bytes=info.st_size,
                sha256=sha256_file(path),
                path=storage.keep_job_file(path),
            )
        )
