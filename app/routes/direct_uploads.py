"""/v1/uploads: presigned multipart uploads, so that a large file goes from the client straight to the object store.

The API signs part URLs and, at completion, checks sizes the store reports; it never sees the file's bytes. The
declared sha256 is the client's word until the validating worker hashes the stored object while fetching it
(worker/validate.py), and the format is recognised there too, inside the sandbox: until then the row's format is
`pending`, which no content-addressed lookup matches, so an unverified hash is never reused.
"""

from __future__ import annotations

import logging
import math
import re
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.deps import SessionDep, SettingsDep, TenantDep, owned
from app.direct_uploads import abort, claim
from app.errors import Conflict, PayloadTooLarge, Unprocessable
from app.models import PENDING_FORMAT, Dataset, DirectUpload, Model, Tenant, new_id, utcnow
from app.object_store import ObjectStorage
from app.queue import enqueue_validation
from app.routes.common import errors
from app.routes.datasets import parse_options
from app.settings import Settings
from app.stores import open_storage
from app.uploads import ReceivedForm, multipart_openapi, receive_form
from contract.wire import DatasetPublic, DirectUploadComplete, DirectUploadPublic, ModelPublic
from contract.wire.direct_uploads import MAX_PARTS

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/uploads", tags=["uploads"])

STORED_NAMES = {"model": "model.bin", "dataset": "data.bin"}
MAX_FORM_BYTES = 64 * 1024**2  # the form carries fields and at most a tokenizer.json, never the file
SHA256 = re.compile(r"^[0-9a-f]{64}$")
CREATE_BODY = multipart_openapi(
    {"tokenizer": "Datasets: optional tokenizer.json, as for POST /v1/datasets"},
    {
        "kind": '"model" or "dataset"',
        "size": "The file's size in bytes",
        "sha256": "The file's sha256 (hex); the validating worker checks the stored bytes against it",
        "filename": "The file's name (a label only; the format is recognised by content)",
        "name": "Optional display name",
        "label_column": "Datasets: as for POST /v1/datasets (so are text_column, tokenizer_from, max_length, "
        "classes, image_size)",
    },
    required=("kind", "size", "sha256"),
)


def valid_direct_upload(session: SessionDep, tenant: TenantDep, upload_id: Annotated[str, Path()]) -> DirectUpload:
    """The caller's upload in progress, or 404."""
    return owned(session, DirectUpload, upload_id, tenant, "upload in progress")


DirectUploadDep = Annotated[DirectUpload, Depends(valid_direct_upload)]


def _object_store(settings: Settings) -> ObjectStorage:
    storage = open_storage(settings)
    if not isinstance(storage, ObjectStorage):
        raise Conflict(
            "this server keeps files on its own disk, which clients cannot reach: send the file to "
            "POST /v1/models or POST /v1/datasets instead (direct uploads need DISTILLERY_STORAGE_URL=s3://...)",
            code="direct_upload_unavailable",
        )
    return storage


def _declared(form: ReceivedForm, settings: Settings) -> tuple[str, int, str]:
    """kind, size and sha256 from the form, checked; 413 naming the limit for a file over it."""
    fields = form.fields
    kind = fields.get("kind", "").strip()
    if kind not in STORED_NAMES:
        raise Unprocessable('kind must be "model" or "dataset"')
    try:
        size = int(fields.get("size", ""))
    except ValueError:
        raise Unprocessable("size must be the file's size in bytes, an integer") from None
    if size < 1:
        raise Unprocessable("size must be at least 1: the file is empty")
    if size > settings.max_upload_bytes:
        raise PayloadTooLarge(
            f"the file is {size} bytes, over the upload limit of {settings.max_upload_bytes} bytes "
            "(DISTILLERY_MAX_UPLOAD_BYTES)"
        )
    sha256 = fields.get("sha256", "").strip().lower()
    if not SHA256.match(sha256):
        raise Unprocessable("sha256 must be the file's sha256 as 64 hex digits")
    if "file" in form.files:
        raise Unprocessable("send the file's bytes to the part URLs this answers with, not in this form")
    return kind, size, sha256


def part_size_for(size: int, configured: int) -> int:
    """The configured part size, raised (to whole MiB) for a file that would otherwise need over 10,000 parts."""
    mib = 1024**2
    return max(configured, math.ceil(size / MAX_PARTS / mib) * mib)


def start(session: Session, storage: ObjectStorage, settings: Settings, tenant: Tenant, form: ReceivedForm) -> dict:
    """Record the upload, open the store's multipart upload, and sign a PUT URL per part."""
    kind, size, sha256 = _declared(form, settings)
    name = form.fields.get("name") or form.fields.get("filename") or kind
    if len(name) > 255:
        raise Unprocessable("name must be at most 255 characters")
    object_id = new_id("mdl" if kind == "model" else "dst")
    folder = storage.upload_dir(tenant.id, kind + "s", object_id)
    options: dict = {}
    if kind == "dataset":
        options = parse_options(form)
        tok = form.files.get("tokenizer")
        if tok is not None:
            options["tokenizer_sha256"] = tok.sha256
            options["tokenizer_path"] = f"{folder}/tokenizer.json"
            storage.put(tok.path, options["tokenizer_path"])
    part_size = part_size_for(size, settings.direct_upload_part_bytes)
    row = DirectUpload(
        id=new_id("upl"),
        tenant_id=tenant.id,
        kind=kind,
        object_id=object_id,
        name=name,
        path=f"{folder}/{STORED_NAMES[kind]}",
        size_bytes=size,
        sha256=sha256,
        part_size=part_size,
        options=options,
        created_at=utcnow(),
        expires_at=utcnow() + timedelta(seconds=settings.direct_upload_expiry_s),
    )
    row.store_upload_id = storage.start_multipart(row.path)
    session.add(row)
    session.commit()
    logger.info("direct upload %s of a %s (%d bytes) started", row.id, kind, size)
    return public(storage, row, settings.direct_upload_expiry_s)


def public(storage: ObjectStorage, row: DirectUpload, expires_s: int) -> dict:
    """The upload as the client sees it, with freshly signed part URLs."""
    count = math.ceil(row.size_bytes / row.part_size)
    urls = storage.part_urls(row.path, row.store_upload_id, count, expires_s)
    fields = ("id", "kind", "name", "size_bytes", "sha256", "part_size", "created_at", "expires_at")
    return {**{f: getattr(row, f) for f in fields}, "parts": [{"number": n, "url": u} for n, u in enumerate(urls, 1)]}


@router.post(
    "",
    status_code=201,
    response_model=DirectUploadPublic,
    openapi_extra=CREATE_BODY,
    responses=errors(409, 413),
    summary="Start a direct upload",
    operation_id="uploads_create",
)
async def create_upload(request: Request, tenant: TenantDep, session: SessionDep, settings: SettingsDep) -> dict:
    """Start a presigned multipart upload of a model or dataset (object store only; 409 on a local store).

    PUT each part's bytes to its URL, then complete the upload. The form takes the same fields as
    POST /v1/models or /v1/datasets, less the file, plus `kind`, `size` and `sha256`."""
    storage = _object_store(settings)
    form = await receive_form(request, storage.tmp_dir, MAX_FORM_BYTES, {"tokenizer", "file"})
    try:
        return await run_in_threadpool(start, session, storage, settings, tenant, form)
    finally:
        form.cleanup()


def _check_parts(storage: ObjectStorage, row: DirectUpload, body: DirectUploadComplete) -> list[tuple[int, str]]:
    """The (number, etag) list to complete with: every part once, each in the store, their sizes adding up."""
    expected = math.ceil(row.size_bytes / row.part_size)
    numbers = sorted(p.number for p in body.parts)
    if numbers != list(range(1, expected + 1)):
        raise Unprocessable(f"name every part from 1 to {expected} once (parts of {row.part_size} bytes)")
    held = storage.uploaded_parts(row.path, row.store_upload_id)
    missing = [p.number for p in body.parts if p.number not in held]
    if missing:
        raise Unprocessable(f"parts {missing[:20]} never reached the store: PUT them to their URLs, then complete")
    stale = [p.number for p in body.parts if held[p.number][0].strip('"') != p.etag.strip('"')]
    if stale:
        raise Unprocessable(f"the etags of parts {stale[:20]} are not those of the bytes the store holds")
    total = sum(held[n][1] for n in numbers)
    if total != row.size_bytes:
        raise Unprocessable(
            f"the parts hold {total} bytes, not the declared {row.size_bytes}: PUT the right bytes again and "
            "complete, or DELETE the upload",
            code="size_mismatch",
        )
    return [(p.number, p.etag) for p in sorted(body.parts, key=lambda p: p.number)]


def finish(session: Session, storage: ObjectStorage, row: DirectUpload, body: DirectUploadComplete) -> Model | Dataset:
    """Join the parts, then make the model or dataset row (`validating`) and ask a worker to validate it."""
    parts = _check_parts(storage, row, body)
    try:
        size = storage.complete_multipart(row.path, row.store_upload_id, parts)
    except storage.client.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise Unprocessable(
            f"the store refused to join the parts ({code}): every part but the last must be {row.part_size} bytes"
        ) from None
    if size != row.size_bytes:  # the parts added up a moment ago: only a store that changed under us gets here
        storage.remove_tree(row.path.rsplit("/", 1)[0])
        raise Unprocessable(f"the stored file is {size} bytes, not the declared {row.size_bytes}", code="size_mismatch")
    # Claim the upload: of two completes at once, one makes the row and the other finds nothing.
    if not claim(session, row.id):
        raise Conflict(f"upload {row.id} was completed or aborted meanwhile")
    common = {
        "id": row.object_id,
        "tenant_id": row.tenant_id,
        "name": row.name,
        "format": PENDING_FORMAT,
        "status": "validating",
        "size_bytes": row.size_bytes,
        "sha256": row.sha256,
        "path": row.path,
    }
    made: Model | Dataset = Model(**common) if row.kind == "model" else Dataset(**common, options=row.options)
    session.add(made)
    session.commit()
    try:
        enqueue_validation(row.kind + "s", made.id)
    except Exception:  # the row stays 'validating'; the worker's sweeper re-sends validation
        logger.exception("could not enqueue validation of %s %s", row.kind, made.id)
    return made


@router.post(
    "/{upload_id}/complete",
    status_code=201,
    response_model=ModelPublic | DatasetPublic,
    responses=errors(400, 404, 409),
    summary="Complete a direct upload",
    operation_id="uploads_complete",
)
def complete_upload(
    upload: DirectUploadDep, body: DirectUploadComplete, session: SessionDep, settings: SettingsDep
) -> ModelPublic | DatasetPublic:
    """Join the parts into the file and register the model or dataset (`validating`, format `pending`).

    A worker hashes the stored bytes against the declared sha256 (a mismatch makes the upload `invalid`,
    code `checksum_mismatch`) and recognises the format by content, as for any upload."""
    made = finish(session, _object_store(settings), upload, body)
    return ModelPublic.model_validate(made) if isinstance(made, Model) else DatasetPublic.model_validate(made)


@router.delete(
    "/{upload_id}",
    status_code=204,
    responses=errors(404, 409),
    summary="Abort a direct upload",
    operation_id="uploads_delete",
)
def abort_upload(upload: DirectUploadDep, session: SessionDep, settings: SettingsDep) -> Response:
    """Abort an upload in progress: the parts the store holds are dropped."""
    abort(session, _object_store(settings), upload)
    return Response(status_code=204)
