"""Ending presigned multipart uploads that will not be completed: aborted by the client, or expired (the reaper)."""

from __future__ import annotations

import logging
from typing import cast

from sqlalchemy import CursorResult, delete, select
from sqlalchemy.orm import Session

from app.models import DirectUpload, utcnow
from app.object_store import ObjectStorage
from app.storage import LocalStorage

logger = logging.getLogger(__name__)


def claim(session: Session, upload_id: str) -> bool:
    """Delete the upload's row, uncommitted; False (rolled back) when a complete or abort took it first."""
    if cast(CursorResult, session.execute(delete(DirectUpload).where(DirectUpload.id == upload_id))).rowcount != 1:
        session.rollback()
        return False
    return True


def abort(session: Session, storage: ObjectStorage, row: DirectUpload) -> bool:
    """Delete the row (a compare-and-set: of two aborts, one acts), then the store's multipart upload and any
    tokenizer stored for it. Whether this call aborted it."""
    if not claim(session, row.id):
        return False
    session.commit()
    storage.abort_multipart(row.path, row.store_upload_id)
    storage.remove_tree(row.path.rsplit("/", 1)[0])
    logger.info("direct upload %s aborted", row.id)
    return True


def abort_expired(session: Session, storage: LocalStorage) -> list[str]:
    """Abort every upload past its expires_at (their part URLs no longer work); the ids aborted."""
    if not isinstance(storage, ObjectStorage):
        return []
    expired = session.scalars(select(DirectUpload).where(DirectUpload.expires_at < utcnow())).all()
    return [row.id for row in expired if abort(session, storage, row)]
