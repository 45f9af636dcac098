"""The FastAPI application."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from app.errors import install_handlers
from app.logredact import install_log_redaction
from app.routes import dashboard, datasets, health, jobs, metrics, models, report_html, webhooks

logger = logging.getLogger(__name__)


def create_app() -> FastAPI:
    """Build the API; it stores and enqueues, it never trains (and never imports torch)."""
    # uvicorn has configured its loggers by the time it imports this module (`distillery up`, `distillery
    # api`, `uvicorn app.main:app`): API keys in a request line (the dashboard's /?key=) never reach the log.
    install_log_redaction()
    app = FastAPI(
        title="Distillery",
        version="1.0",
        description="Knowledge distillation as a service: upload a teacher and data, get a small, fast student "
        "and a report. Every /v1 route needs `Authorization: Bearer <key>`.",
    )
    install_handlers(app)
    for router in (
        health.router,
        models.router,
        datasets.router,
        jobs.router,
        webhooks.router,
        report_html.router,
        metrics.router,
        dashboard.router,
    ):
        app.include_router(router)
    return app


app = create_app()
