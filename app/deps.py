"""Request dependencies: the session, the caller's tenant, and resources that belong to it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request, Security
from fastapi.security import HTTPBearer
from sqlalchemy.orm import Session

from app.auth import tenant_for_key
from app.db import get_db, get_sessionmaker
from app.errors import NotFound, Unauthorized
from app.models import Dataset, Job, Model, Tenant
from app.settings import Settings, get_settings

SessionDep = Annotated[Session, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


class BearerKey(HTTPBearer):
    """`Authorization: Bearer <key>`, declared in OpenAPI as an HTTP bearer scheme (Swagger UI's Authorize).

    It hands the raw header to authenticate(), which answers a missing, malformed or unknown key with the
    error envelope's 401 and a message saying which; HTTPBearer's own check would answer FastAPI's bare 401/403.
    """

    async def __call__(self, request: Request) -> str | None:  # type: ignore[override]
        return request.headers.get("authorization")


bearer_key = BearerKey(
    scheme_name="bearerAuth",
    bearerFormat="API key",
    description="An API key: `distillery up` prints one, `distillery keys create --tenant NAME` makes more.",
    auto_error=False,
)
AuthorizationDep = Annotated[str | None, Security(bearer_key)]


def current_tenant(session: SessionDep, authorization: AuthorizationDep) -> Tenant:
    """The tenant of the Bearer key, or 401."""
    return authenticate(session, authorization)


def authenticate(session: Session, authorization: str | None) -> Tenant:
    """The tenant of an Authorization header's Bearer key, or 401."""
    if not authorization:
        raise Unauthorized("missing Authorization header; send 'Authorization: Bearer <key>'")
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("malformed Authorization header; send 'Authorization: Bearer <key>'")
    tenant = tenant_for_key(session, key.strip())
    if tenant is None:
        raise Unauthorized("invalid or revoked API key")
    return tenant


TenantDep = Annotated[Tenant, Depends(current_tenant)]


def owned(session: Session, cls: type, obj_id: str, tenant: Tenant, what: str):
    """The tenant's row with this id; another tenant's id is as missing as an unknown one."""
    row = session.get(cls, obj_id)
    if row is None or row.tenant_id != tenant.id:
        raise NotFound(f"no {what} with id {obj_id!r}")
    return row


def valid_job(session: SessionDep, tenant: TenantDep, job_id: Annotated[str, Path()]) -> Job:
    """The caller's job, or 404."""
    return owned(session, Job, job_id, tenant, "job")


def valid_model(session: SessionDep, tenant: TenantDep, model_id: Annotated[str, Path()]) -> Model:
    """The caller's model, or 404."""
    return owned(session, Model, model_id, tenant, "model")


def valid_dataset(session: SessionDep, tenant: TenantDep, dataset_id: Annotated[str, Path()]) -> Dataset:
    """The caller's dataset, or 404."""
    return owned(session, Dataset, dataset_id, tenant, "dataset")


def polled_job(job_id: Annotated[str, Path()], authorization: AuthorizationDep) -> Job:
    """The caller's job, or 401/404, in one dependency: clients poll this, and each sync dependency costs a hop
    to the thread pool (session, tenant and row as three dependencies made four hops with the endpoint)."""
    with get_sessionmaker()() as session:
        return owned(session, Job, job_id, authenticate(session, authorization), "job")


JobDep = Annotated[Job, Depends(valid_job)]
PolledJobDep = Annotated[Job, Depends(polled_job)]
ModelDep = Annotated[Model, Depends(valid_model)]
DatasetDep = Annotated[Dataset, Depends(valid_dataset)]
