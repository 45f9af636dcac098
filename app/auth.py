"""API keys: shown once, stored as a sha256 hash, looked up by hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import ApiKey, Tenant, new_id, utcnow

KEY_PREFIX = "dk_"


def hash_key(key: str) -> str:
    """The stored form of an API key."""
    return hashlib.sha256(key.encode()).hexdigest()


def get_or_create_tenant(session: Session, name: str) -> Tenant:
    """The tenant called `name`, created when missing."""
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant = Tenant(id=new_id("ten"), name=name)
        session.add(tenant)
        session.flush()
    return tenant


def create_key(session: Session, tenant_name: str) -> str:
    """Create an API key for the tenant (created if new) and return the key itself."""
    tenant = get_or_create_tenant(session, tenant_name)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(id=new_id("key"), tenant_id=tenant.id, key_hash=hash_key(key), prefix=key[:10]))
    session.commit()
    return key


def revoke_key(session: Session, key_or_prefix: str) -> int:
    """Revoke keys matching the full key or its displayed prefix; returns how many."""
    rows = session.scalars(
        select(ApiKey).where(
            (ApiKey.key_hash == hash_key(key_or_prefix)) | (ApiKey.prefix == key_or_prefix),
            ApiKey.revoked_at.is_(None),
        )
    ).all()
    for row in rows:
        row.revoked_at = utcnow()
    session.commit()
    return len(rows)


def tenant_for_key(session: Session, key: str) -> Tenant | None:
    """The tenant owning a live key, or None."""
    digest = hash_key(key)
    # One round trip for key and tenant: every authenticated request pays for this lookup.
    row = session.execute(
        select(Tenant, ApiKey.key_hash)
        .join(ApiKey, ApiKey.tenant_id == Tenant.id)
        .where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None))
    ).first()
    # The lookup is by hash, so timing reveals nothing about the key; compare again in constant time anyway.
    if row is None or not hmac.compare_digest(row[1], digest):
        return None
    return row[0]
