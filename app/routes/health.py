"""Liveness and readiness."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import func, select, text

from app.deps import SessionDep, SettingsDep
from app.models import WorkerHeartbeat, utcnow
from app.queue import broker_reachable
from contract.wire import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, operation_id="health_live")
def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}}, operation_id="health_ready")
def readyz(session: SessionDep, settings: SettingsDep):
    """Database and broker reachable, and a fresh worker heartbeat seen."""
    checks: dict[str, Any] = {}
    try:
        session.execute(text("SELECT 1"))
        checks["database"] = "ok"
        cutoff = utcnow() - timedelta(seconds=settings.worker_heartbeat_timeout_s)
        fresh = session.scalar(
            select(func.count()).select_from(WorkerHeartbeat).where(WorkerHeartbeat.heartbeat_at >= cutoff)
        )
        checks["workers"] = fresh or 0
    except Exception as exc:  # the database being down is exactly what this reports
        checks["database"] = f"error: {type(exc).__name__}"
        checks["workers"] = 0
    checks["broker"] = "ok" if broker_reachable() else "unreachable"
    ready = checks["database"] == "ok" and checks["broker"] == "ok" and checks["workers"] > 0
    body = Health(status="ready" if ready else "not_ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)
