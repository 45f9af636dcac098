"""Shared upload logic of /v1/models and /v1/datasets."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.errors import Conflict, Unprocessable
from app.models import Dataset, Job, Model, Tenant, new_id
from app.queue import enqueue_validation
from app.settings import Settings
from app.storage import LocalStorage
from app.stores import open_storage
from app.uploads import ReceivedForm, receive_form
from contract import ACTIVE

logger = logging.getLogger(__name__)


async def receive(request: Request, settings: Settings, file_fields: set[str]) -> tuple[LocalStorage, ReceivedForm]:
    """Stream the body to a temporary folder of the store; the caller must clean it up."""
    storage = open_storage(settings)
    form = await receive_form(request, storage.tmp_dir, settings.max_upload_bytes, file_fields)
    if "file" not in form.files:
        form.cleanup()
        raise Unprocessable("the multipart body has no 'file' field")
    return storage, form


def publish(
    session: Session,
    storage: LocalStorage,
    form: ReceivedForm,
    row: Model | Dataset,
    kind: str,
    stored_name: str,
) -> None:
    """Move the finished file into the store, then make the row visible and ask for validation."""
    rel_dir = storage.upload_dir(row.tenant_id, kind, row.id)
    upload = form.files["file"]
    storage.put(upload.path, f"{rel_dir}/{stored_name}")
    row.path = f"{rel_dir}/{stored_name}"
    try:
        session.add(row)
        session.commit()
    except Exception:
        storage.remove_tree(rel_dir)
        raise
    try:
        enqueue_validation(kind, row.id)
    except Exception:  # the row stays 'validating'; the worker's sweeper re-sends validation
        logger.exception("could not enqueue validation of %s %s", kind, row.id)


async def finish(session: Session, storage: LocalStorage, form: ReceivedForm, row, kind: str, name: str) -> None:
    """Publish off the event loop and always remove the temporary folder."""
    try:
        await run_in_threadpool(publish, session, storage, form, row, kind, name)
    finally:
        form.cleanup()


def new_upload_fields(form: ReceivedForm, tenant: Tenant, prefix: str, fmt: str) -> dict:
    """Column values common to a new model or dataset row."""
    upload = form.files["file"]
    name = form.fields.get("name") or upload.filename or prefix
    if len(name) > 255:
        raise Unprocessable("name must be at most 255 characters")
    return {
        "id": new_id(prefix),
        "tenant_id": tenant.id,
        "name": name,
        "format": fmt,
        "status": "validating",
        "size_bytes": upload.size_bytes,
        "sha256": upload.sha256,
        "path": "",
    }


REUSED_DESCRIPTION = (
    "The same bytes (sha256) with the same options were already uploaded by this tenant and are ready or still "
    "validating: the answer is that existing object (its id and name), and nothing new is stored. An invalid or "
    "deleted earlier upload does not count, and another tenant's never does."
)


def reused_response(model: type) -> dict:
    """The OpenAPI declaration of the 200 a content-addressed upload answers with an existing object."""
    return {200: {"model": model, "description": REUSED_DESCRIPTION}}


# An earlier upload in one of these states is reused for the same bytes and options; an invalid one is not.
REUSABLE_STATUSES = ("validating", "ready")
# Options that differ between two uploads of the same content (where the copy is stored), not in what it means.
PER_ROW_OPTIONS = ("tokenizer_path",)


def _same_options(stored: dict | None, options: dict | None) -> bool:
    def meaning(opts: dict | None) -> dict:
        return {k: v for k, v in (opts or {}).items() if k not in PER_ROW_OPTIONS}

    return meaning(stored) == meaning(options)


def find_reusable(session: Session, cls: Any, tenant: Tenant, sha256: str, fmt: str, options: dict | None = None):
    """The tenant's newest upload of the same bytes and options that is ready or still validating, or None.

    Uploads are content-addressed per tenant: a re-upload answers with that object instead of storing a copy.
    Another tenant's upload of the same bytes is never found (tenants never see each other's data).
    """
    query = (
        select(cls)
        .where(cls.tenant_id == tenant.id, cls.sha256 == sha256, cls.format == fmt)
        .where(cls.status.in_(REUSABLE_STATUSES))
        .order_by(cls.id.desc())
    )
    for row in session.scalars(query):
        if cls is not Dataset or _same_options(row.options, options):
            logger.info("%s %s has the same content and options: reused instead of a new upload", cls.__name__, row.id)
            return row
    return None


def refuse_if_in_use(session: Session, tenant: Tenant, obj_id: str, what: str) -> None:
    """409 when a queued or running job of the tenant uses this model or dataset."""
    jobs = session.scalars(select(Job).where(Job.tenant_id == tenant.id, Job.status.in_(ACTIVE))).all()
    for job in jobs:
        if obj_id in (job.teacher_id, job.train_dataset_id, job.eval_dataset_id, job.student.get("model_id")):
            raise Conflict(
                f"{what} {obj_id} is used by {job.status} job {job.id}; cancel it or wait for it to end",
                code=f"{what}_in_use",
            )
