"""The FastAPI application."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, cast

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from app.errors import install_handlers
from app.logredact import install_log_redaction
from app.openapi_links import add_links
from app.routes import dashboard, datasets, direct_uploads, health, jobs, metrics, models, reports, webhooks
from contract import wire as schemas

logger = logging.getLogger(__name__)

# Swagger UI (swagger-ui-dist, Apache-2.0; see VERSION.txt there) ships inside the package: /docs draws with no
# network beyond this service, where FastAPI's default page loads it from a CDN and stays blank offline.
DOCS_ASSETS = Path(__file__).resolve().parent / "static" / "swagger-ui"
DOCS_ASSETS_URL = "/docs/assets"


def _install_docs(app: FastAPI) -> None:
    """GET /docs: Swagger UI from the package's own assets (served at /docs/assets/)."""
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=DOCS_ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=cast(str, app.openapi_url),  # set: the app publishes its document
            title=f"{app.title} API",
            swagger_js_url=f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS_URL}/favicon-32x32.png",
            # Authorize once, and the key survives a reload of the page.
            swagger_ui_parameters={"persistAuthorization": True},
        )


def _schema_examples() -> dict[str, list]:
    """The examples each wire model of contract.wire declares, by its OpenAPI component name."""
    found: dict[str, Any] = {}
    for name, model in vars(schemas).items():
        if isinstance(model, type) and issubclass(model, BaseModel):
            extra = model.model_config.get("json_schema_extra")
            if isinstance(extra, dict) and "examples" in extra:
                found[name] = extra["examples"]
    return found


def _finish_openapi(app: FastAPI, routers: tuple[APIRouter, ...]) -> None:
    """Publish the examples as written, nulls included, and the links between operations.

    FastAPI drops every None from the OpenAPI document, the examples' nulls too: JobPublic's example lost its
    required `eval_dataset_id`, `error` and `finished_at` and no longer validated against its own schema, and
    the report's example lost `baseline`.
    """
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        add_links(document)
        components = document.get("components", {}).get("schemas", {})
        for name, examples in _schema_examples().items():
            if name in components:
                components[name]["examples"] = copy.deepcopy(examples)
        for route in (r for router in routers for r in router.routes):
            if not isinstance(route, APIRoute) or not route.include_in_schema:
                continue
            assert route.methods is not None  # an APIRoute always has its methods
            for method in route.methods:
                operation = document["paths"].get(route.path_format, {}).get(method.lower())
                for status, spec in route.responses.items() if operation else ():
                    for media, content in spec.get("content", {}).items():
                        if "example" in content:
                            published = operation["responses"][str(status)]["content"][media]
                            published["example"] = copy.deepcopy(content["example"])
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def create_app() -> FastAPI:
    """Build the API; it stores and enqueues, it never trains (and never imports torch)."""
    # uvicorn has configured its loggers by the time it imports this module (`distillery up`, `distillery
    # api`, `uvicorn app.main:app`): API keys in a request line (the dashboard's /?key=) never reach the log.
    install_log_redaction()
    app = FastAPI(
        title="Distillery",
        version="1.0",
        description="Knowledge distillation as a service: upload a teacher and data, get a small, fast student "
        "and a report. Every /v1 route needs `Authorization: Bearer <key>` (press Authorize and paste the key; "
        "`distillery up` prints one, `distillery keys create --tenant NAME` makes more).",
        # Both default pages load their scripts from a CDN; /docs is served from the package instead, and
        # ReDoc, which would stay blank offline, is left out.
        docs_url=None,
        redoc_url=None,
        # One schema per shape, named as in contract.wire: a generated client gets `StudentSpec`, not
        # `StudentSpec-Input` and `StudentSpec-Output` (their serialised form only drops nulls).
        separate_input_output_schemas=False,
    )
    install_handlers(app)
    _install_docs(app)
    routers = (
        health.router,
        models.router,
        datasets.router,
        direct_uploads.router,
        jobs.router,
        webhooks.router,
        reports.router,
        metrics.router,
        dashboard.router,
    )
    for router in routers:
        app.include_router(router)
    _finish_openapi(app, routers)
    return app


app = create_app()
