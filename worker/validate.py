"""Validation of uploads: open the file in a child process and record `ready` or `invalid`."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

from sqlalchemy import or_, update

from app.db import get_sessionmaker
from app.models import Dataset, Model, utcnow
from app.settings import get_settings
from app.storage import LocalStorage
from worker.sandbox import inspect_model_sandboxed

logger = logging.getLogger(__name__)

INSPECT_TIMEOUT_S = 600


def dataset_spec_options(row: Dataset, storage: LocalStorage) -> dict:
    """DatasetSpec keyword arguments (besides path) from a dataset row."""
    options = dict(row.options or {})
    tokenizer = options.pop("tokenizer_path", None)
    options.pop("tokenizer_sha256", None)
    return {"format": row.format, "sha256": row.sha256,
            "tokenizer_path": str(storage.path(tokenizer)) if tokenizer else None, **options}


def inspect_in_child(kind: str, path: Path, options: dict) -> dict:
    """Run worker.inspect_child on a file; returns {"info": ...} or {"error": ...}."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "worker.inspect_child", kind, str(path), json.dumps(options)],
            capture_output=True, text=True, timeout=INSPECT_TIMEOUT_S, cwd=path.parent,
        )
    except subprocess.TimeoutExpired:
        return {"error": {"code": "validation_timeout",
                          "message": f"opening the file took longer than {INSPECT_TIMEOUT_S} s"}}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        logger.warning("inspect child failed (%s): %s", proc.returncode, proc.stderr[-2000:])
        return {"error": {"code": f"invalid_{kind[:-1]}",
                          "message": f"the file could not be opened (the reader exited with {proc.returncode})"}}
    return json.loads(lines[-1])


def validate(kind: str, obj_id: str) -> None:
    """Validate one model or dataset row that is still `validating`."""
    cls = Model if kind == "models" else Dataset
    storage = LocalStorage.from_settings(get_settings())
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
        path = storage.path(row.path)
        options = {} if kind == "models" else dataset_spec_options(row, storage)
    if kind == "models":
        # Model files can carry code: open them in the sandbox, which sees only a fresh empty folder.
        storage.tmp_dir.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=f"validate-{obj_id}-", dir=storage.tmp_dir))
        try:
            result = inspect_model_sandboxed(path, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    else:
        result = inspect_in_child(kind, path, options)
    values = ({"status": "ready", "info": result["info"], "error": None} if "info" in result
              else {"status": "invalid", "error": result["error"]})
    with get_sessionmaker()() as session:
        session.execute(update(cls).where(cls.id == obj_id, cls.status == "validating").values(**values))
        session.commit()
    logger.info("%s %s is %s", kind, obj_id, values["status"])
