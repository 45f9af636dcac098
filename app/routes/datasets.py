"""/v1/datasets: training and evaluation data."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from app.deps import DatasetDep, SessionDep, SettingsDep, TenantDep
from app.errors import Unprocessable
from app.models import Dataset
from app.routes import uploads
from app.routes.common import MAX_CURSOR, MAX_LIMIT, errors, paginate
from app.sniff import sniff_dataset
from app.storage import DATASET_FILES
from app.stores import open_storage
from app.uploads import ReceivedForm, multipart_openapi
from contract.wire import DatasetPublic, Page

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

EXTENSIONS = DATASET_FILES
UPLOAD_BODY = multipart_openapi(
    {
        "file": ".npz (arrays x, optional y), CSV, JSONL, Parquet, or a zip of class folders of PNG/JPEG images; "
        "recognised by content",
        "tokenizer": "Optional tokenizer.json (the `tokenizers` library's format) for a text column",
    },
    {
        "name": "Optional display name",
        "label_column": "Label column of a table (default: label, if present)",
        "text_column": "Text column to tokenise with the tokenizer",
        "tokenizer_from": '"teacher": no tokenizer file; the job tokenises the text with its Hugging Face teacher\'s',
        "max_length": "Tokens per example (default 128)",
        "classes": "Order of string labels: a JSON list or comma-separated names",
        "image_size": "Image datasets: HxW (or one number) every image is resized to (default: the first image's)",
    },
)


def parse_options(form: ReceivedForm) -> dict:
    """Dataset options from the form fields, checked."""
    fields = form.fields
    options: dict = {}
    for key in ("label_column", "text_column"):
        if fields.get(key):
            options[key] = fields[key].strip()
    if fields.get("max_length"):
        try:
            options["max_length"] = int(fields["max_length"])
        except ValueError:
            raise Unprocessable("max_length must be an integer") from None
        if not 1 <= options["max_length"] <= 8192:
            raise Unprocessable("max_length must be between 1 and 8192")
    if fields.get("classes"):
        raw = fields["classes"].strip()
        try:
            classes = json.loads(raw) if raw.startswith("[") else [c.strip() for c in raw.split(",")]
        except json.JSONDecodeError as exc:
            raise Unprocessable(f"classes is not a JSON list: {exc}") from None
        except (RecursionError, ValueError):  # nested too deeply, or a number of thousands of digits
            raise Unprocessable('classes is not a flat JSON list of names, e.g. ["cat", "dog"]') from None
        if (
            not isinstance(classes, list)
            or not classes
            or not all(isinstance(c, str | int | float) for c in classes)
            or len(set(map(str, classes))) != len(classes)
        ):
            raise Unprocessable('classes must be a non-empty list of distinct names, e.g. ["cat", "dog"]')
        options["classes"] = [str(c) for c in classes]
    if fields.get("image_size"):
        sides = fields["image_size"].strip().lower().replace(",", "x").split("x")
        try:
            size = [int(v) for v in sides]
        except ValueError:
            raise Unprocessable("image_size must be HxW or one number, e.g. 32x32 or 32") from None
        size = size * 2 if len(size) == 1 else size
        if len(size) != 2 or not all(1 <= v <= 4096 for v in size):
            raise Unprocessable("image_size must be HxW with each side between 1 and 4096")
        options["image_size"] = size
    if fields.get("tokenizer_from"):
        if fields["tokenizer_from"].strip() != "teacher":
            raise Unprocessable('tokenizer_from takes one value, "teacher" (a Hugging Face teacher\'s own tokenizer)')
        if "tokenizer" in form.files:
            raise Unprocessable("send either a tokenizer file or tokenizer_from=teacher, not both")
        options["tokenizer_from"] = "teacher"
    elif options.get("text_column") and "tokenizer" not in form.files:
        raise Unprocessable(
            "text_column needs a tokenizer: send tokenizer.json as the 'tokenizer' file field, or "
            "tokenizer_from=teacher to tokenise with a Hugging Face teacher's own tokenizer at job time"
        )
    return options


@router.post(
    "",
    status_code=201,
    response_model=DatasetPublic,
    openapi_extra=UPLOAD_BODY,
    responses={**errors(413), **uploads.reused_response(DatasetPublic)},
    summary="Upload a dataset",
    operation_id="datasets_create",
)
async def upload_dataset(
    request: Request, response: Response, tenant: TenantDep, session: SessionDep, settings: SettingsDep
) -> Dataset:
    """Stream a dataset (and optional tokenizer) to the store; a worker validates it.

    The same bytes, tokenizer and options as a ready or validating dataset of the tenant answer 200 with it."""
    storage, form = await uploads.receive(request, settings, {"file", "tokenizer"})
    try:
        upload = form.files["file"]
        options = parse_options(form)
        fmt = await run_in_threadpool(sniff_dataset, upload.path, options)
        tok = form.files.get("tokenizer")
        if tok is not None:
            options["tokenizer_sha256"] = tok.sha256
        found = await run_in_threadpool(uploads.find_reusable, session, Dataset, tenant, upload.sha256, fmt, options)
        if found is not None:
            form.cleanup()
            response.status_code = 200
            return found
        row = Dataset(**uploads.new_upload_fields(form, tenant, "dst", fmt), options=options)
        if tok is not None:
            rel = f"{storage.upload_dir(tenant.id, 'datasets', row.id)}/tokenizer.json"
            storage.put(tok.path, rel)
            row.options = {**options, "tokenizer_path": rel}
    except Exception:
        form.cleanup()
        raise
    await uploads.finish(session, storage, form, row, "datasets", EXTENSIONS[fmt])
    return row


@router.get(
    "", response_model=Page[DatasetPublic], responses=errors(), summary="List datasets", operation_id="datasets_list"
)
def list_datasets(
    session: SessionDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20,
    after: Annotated[str | None, Query(max_length=MAX_CURSOR)] = None,
) -> dict:
    """The tenant's datasets, newest first."""
    query = select(Dataset).where(Dataset.tenant_id == tenant.id)
    rows, next_after = paginate(session, query, Dataset.id, limit, after)
    return {"data": rows, "next_after": next_after}


@router.get(
    "/{dataset_id}",
    response_model=DatasetPublic,
    responses=errors(404),
    summary="Get a dataset",
    operation_id="datasets_get",
)
def get_dataset(dataset: DatasetDep) -> Dataset:
    """One dataset."""
    return dataset


@router.delete(
    "/{dataset_id}",
    status_code=204,
    responses=errors(404, 409),
    summary="Delete a dataset",
    operation_id="datasets_delete",
)
def delete_dataset(dataset: DatasetDep, session: SessionDep, tenant: TenantDep, settings: SettingsDep) -> Response:
    """Delete a dataset and its files; 409 while a queued or running job uses it."""
    uploads.refuse_if_in_use(session, tenant, dataset.id, "dataset")
    session.delete(dataset)
    session.commit()
    open_storage(settings).remove_tree(dataset.path.rsplit("/", 1)[0])
    return Response(status_code=204)
