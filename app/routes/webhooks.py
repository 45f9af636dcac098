"""/v1/webhooks: the tenant's webhook signing secret."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import SessionDep, TenantDep
from app.routes.common import errors
from app.webhooks import rotate_secret, tenant_secret
from contract.wire import WebhookSecret

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


@router.get(
    "/secret",
    response_model=WebhookSecret,
    responses=errors(),
    summary="The webhook signing secret",
    operation_id="webhooks_secret_get",
)
def get_secret(session: SessionDep, tenant: TenantDep) -> WebhookSecret:
    """The `whsec_...` secret that signs this tenant's webhook deliveries (made on first use).

    Verify a delivery by recomputing `v1,<base64 HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")>`
    where key is the base64-decoded part after `whsec_` (Standard Webhooks; `app.webhooks.verify_webhook`).
    """
    return WebhookSecret(secret=tenant_secret(session, tenant))


@router.post(
    "/secret/rotate",
    response_model=WebhookSecret,
    responses=errors(),
    summary="Rotate the webhook signing secret",
    operation_id="webhooks_secret_rotate",
)
def post_rotate(session: SessionDep, tenant: TenantDep) -> WebhookSecret:
    """Replace the secret; every delivery from now on, retries included, is signed with the new one."""
    return WebhookSecret(secret=rotate_secret(session, tenant))
