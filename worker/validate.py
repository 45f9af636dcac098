"""Validation of uploads: open the file in a sandboxed child with limits, and record `ready` or `invalid`.

Models and datasets alike are opened only in a child (worker/inspect_child.py) under the sandbox (worker/sandbox/):
no network, only a fresh folder with the upload bound read-only, a memory cap, and a wall clock of
DISTILLERY_VALIDATION_TIMEOUT_S, so that one upload never holds the uploads worker longer than that.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path

from sqlalchemy import or_, update

from app.db import get_sessionmaker
from app.models import PENDING_FORMAT, Dataset, Model, utcnow
from app.settings import Settings, get_settings
from app.storage import DATASET_FILES, MODEL_FILES, ChecksumMismatch, LocalStorage
from app.stores import open_storage
from worker.sandbox import SandboxLimits, inspect_sandboxed, limits_from_env
from worker.sandbox_policy import CODE_BEARING_FORMATS, code_bearing_refusal

logger = logging.getLogger(__name__)


def dataset_spec_options(row: Dataset, storage: LocalStorage) -> dict:
    """DatasetSpec keyword arguments (besides path) from a dataset row."""
    options = dict(row.options or {})
    tokenizer = options.pop("tokenizer_path", None)
    options.pop("tokenizer_sha256", None)
    return {
        "format": row.format,
        "sha256": row.sha256,
        "tokenizer_path": str(storage.local_path(tokenizer)) if tokenizer else None,
        **options,
    }


def data_limits(settings: Settings) -> dict:
    """The caps on a dataset, as the children take them (worker.engine.limits.DataLimits fields)."""
    return {
        "max_classes": settings.max_classes,
        "max_example_elements": settings.max_example_elements,
        "max_dataset_bytes": settings.max_dataset_bytes,
        "max_image_size": settings.max_image_size,
        "max_tokens": settings.max_tokens,
    }


def validation_limits(settings: Settings) -> SandboxLimits:
    """One validation child's limits: the per-upload wall clock, CPU time to match, the memory cap."""
    wall = settings.validation_timeout_s
    limits = limits_from_env(
        SandboxLimits(wall_s=wall, cpu_s=int(wall * 2) + 10, memory_bytes=settings.validation_memory_bytes)
    )
    limits.wall_s = min(limits.wall_s, wall)
    return limits


def _new_workdir(storage: LocalStorage, row) -> Path:
    storage.tmp_dir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"validate-{row.id}-", dir=storage.tmp_dir))


def recognise_direct_upload(kind: str, row, storage: LocalStorage, settings: Settings) -> tuple[Path, dict | None]:
    """A file sent straight to the store: fetch it while hashing it against the declared sha256, then recognise
    its format by content in a sandboxed child (the API never saw the bytes). (local file, None) with row.format
    set, or (path, {"error": ...})."""
    try:
        source = storage.verified_local_path(row.path, row.sha256)
    except ChecksumMismatch as exc:
        message = f"{exc}: the bytes that reached the store are not the file described; upload it again"
        return Path(row.path), {"error": {"code": "checksum_mismatch", "message": message}}
    options = (
        {k: v for k, v in (row.options or {}).items() if k in ("label_column", "text_column")}
        if kind == "datasets"
        else {}
    )
    workdir = _new_workdir(storage, row)
    try:
        answer = inspect_sandboxed(kind, source, workdir, {**options, "sniff": True}, validation_limits(settings))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if "error" in answer:
        return source, answer
    fmt = answer["info"].get("format")
    if fmt not in (MODEL_FILES if kind == "models" else DATASET_FILES):  # the child is untrusted
        return source, {"error": {"code": f"invalid_{kind[:-1]}", "message": "the file's format was not recognised"}}
    row.format = fmt
    return source, None


def inspect_upload(kind: str, row, storage: LocalStorage, settings: Settings) -> dict:
    """{"info": ...} or {"error": ...} for a stored upload, from a sandboxed child that sees only a fresh folder."""
    if row.format == PENDING_FORMAT:
        source, refusal = recognise_direct_upload(kind, row, storage, settings)
        if refusal is not None:
            return refusal
    else:
        source = storage.local_path(row.path)
    if kind == "models" and row.format in CODE_BEARING_FORMATS:
        refusal = code_bearing_refusal(f"a {row.format} model")
        if refusal:
            return {"error": refusal}
    options, extra = {}, {}
    if kind == "datasets":
        options = dataset_spec_options(row, storage)
        if options.get("tokenizer_path"):
            extra["tokenizer_path"] = Path(options.pop("tokenizer_path"))
        options["limits"] = data_limits(settings)
    workdir = _new_workdir(storage, row)
    try:
        return inspect_sandboxed(kind, source, workdir, options, validation_limits(settings), extra_files=extra)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def validate(kind: str, obj_id: str) -> None:
    """Validate one model or dataset row that is still `validating`."""
    cls = Model if kind == "models" else Dataset
    storage = open_storage(get_settings())
    with get_sessionmaker()() as session:
        row = session.get(cls, obj_id)
        if row is None or row.status != "validating":
            logger.info("%s %s is gone or already validated", kind, obj_id)
            return
        # Claim it: a duplicate or re-sent message finds it claimed and leaves it to the validator at work. A
        # claim older than resend_after_s is a validator that died, and the next message takes over.
        window = utcnow() - timedelta(seconds=get_settings().resend_after_s)
        claim = update(cls).where(
            cls.id == obj_id, cls.status == "validating", or_(cls.claimed_at.is_(None), cls.claimed_at < window)
        )
        if session.execute(claim.values(claimed_at=utcnow())).rowcount != 1:
            session.rollback()
            logger.info("%s %s is being validated by another worker; this message is a no-op", kind, obj_id)
            return
        session.commit()
        session.refresh(row)
        session.expunge(row)
    result = inspect_upload(kind, row, storage, get_settings())
    values = (
        {"status": "ready", "info": result["info"], "error": None}
        if "info" in result
        else {"status": "invalid", "error": result["error"]}
    )
    values["format"] = row.format  # recognised just now for a file sent straight to the store
    with get_sessionmaker()() as session:
        session.execute(update(cls).where(cls.id == obj_id, cls.status == "validating").values(**values))
        session.commit()
    logger.info("%s %s is %s", kind, obj_id, values["status"])
