"""/v1/models: uploaded teachers and students."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from app.deps import ModelDep, SessionDep, SettingsDep, TenantDep
from app.models import Model
from app.routes import uploads
from app.routes.common import MAX_CURSOR, MAX_LIMIT, errors, paginate
from app.sniff import sniff_model
from app.storage import MODEL_FILES
from app.stores import open_storage
from app.uploads import multipart_openapi
from contract.wire import ModelPublic, Page

router = APIRouter(prefix="/v1/models", tags=["models"])

EXTENSIONS = MODEL_FILES
UPLOAD_BODY = multipart_openapi(
    {
        "file": "TorchScript archive, torch.export program (.pt2), ONNX file, or a Hugging Face model folder "
        "(save_pretrained, safetensors weights) as one zip or tar; recognised by content"
    },
    {"name": "Optional display name"},
)


@router.post(
    "",
    status_code=201,
    response_model=ModelPublic,
    openapi_extra=UPLOAD_BODY,
    responses={**errors(413), **uploads.reused_response(ModelPublic)},
    summary="Upload a model",
    operation_id="models_create",
)
async def upload_model(
    request: Request, response: Response, tenant: TenantDep, session: SessionDep, settings: SettingsDep
) -> Model:
    """Stream a model file to the store; a worker validates it (`validating -> ready | invalid`).

    The same bytes as a ready or validating model of the tenant answer 200 with that model (content-addressed)."""
    storage, form = await uploads.receive(request, settings, {"file"})
    try:
        upload = form.files["file"]
        fmt = await run_in_threadpool(sniff_model, upload.path)
        existing = await run_in_threadpool(uploads.find_reusable, session, Model, tenant, upload.sha256, fmt)
        if existing is not None:
            form.cleanup()
            response.status_code = 200
            return existing
        row = Model(**uploads.new_upload_fields(form, tenant, "mdl", fmt))
    except Exception:
        form.cleanup()
        raise
    await uploads.finish(session, storage, form, row, "models", EXTENSIONS[fmt])
    return row


@router.get("", response_model=Page[ModelPublic], responses=errors(), summary="List models", operation_id="models_list")
def list_models(
    session: SessionDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20,
    after: Annotated[str | None, Query(max_length=MAX_CURSOR)] = None,
) -> dict:
    """The tenant's models, newest first."""
    rows, next_after = paginate(session, select(Model).where(Model.tenant_id == tenant.id), Model.id, limit, after)
    return {"data": rows, "next_after": next_after}


@router.get(
    "/{model_id}",
    response_model=ModelPublic,
    responses=errors(404),
    summary="Get a model",
    operation_id="models_get",
)
def get_model(model: ModelDep) -> Model:
    """One model."""
    return model


@router.delete(
    "/{model_id}",
    status_code=204,
    responses=errors(404, 409),
    summary="Delete a model",
    operation_id="models_delete",
)
def delete_model(model: ModelDep, session: SessionDep, tenant: TenantDep, settings: SettingsDep) -> Response:
    """Delete a model and its file; 409 while a queued or running job uses it."""
    uploads.refuse_if_in_use(session, tenant, model.id, "model")
    session.delete(model)
    session.commit()
    open_storage(settings).remove_tree(model.path.rsplit("/", 1)[0])
    return Response(status_code=204)
