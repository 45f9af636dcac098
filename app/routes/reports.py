"""GET /v1/jobs/{id}/report.html: the job's report as one self-contained HTML page."""

from __future__ import annotations

import html
import json
import logging

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from app.deps import JobDep, SessionDep
from app.errors import NotFound
from app.models import Artifact
from app.routes.common import errors
from contract.wire import ArtifactPublic, JobPublic
from htmlreport import render_report_html

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

# The page is inline CSS and inline SVG only (the htmlreport package): no script runs, nothing loads, no form
# posts, no site frames it, and `sandbox` gives it an opaque origin (no access to this origin's storage).
REPORT_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'; sandbox"
)
REPORT_HEADERS = {"Content-Security-Policy": REPORT_CSP, "X-Content-Type-Options": "nosniff"}


def _json_errors(*codes: int) -> dict:
    """errors() with the envelope declared as application/json (the route's own type is text/html)."""
    ref = {"$ref": "#/components/schemas/ErrorResponse"}
    return {
        code: {"description": spec["description"], "content": {"application/json": {"schema": ref}}}
        for code, spec in errors(*codes).items()
    }


@router.get(
    "/{job_id}/report.html",
    response_class=HTMLResponse,
    responses={
        **_json_errors(404),
        200: {
            "content": {
                "text/html": {
                    "schema": {"type": "string"},
                    "example": "<!doctype html><html>...<svg>...</svg>...</html>",
                }
            },
            "description": "Self-contained HTML (inline SVG, no scripts)",
        },
    },
    summary="The job's report as an HTML page",
    operation_id="jobs_report_html_get",
)
def get_report_html(job: JobDep, session: SessionDep) -> HTMLResponse:
    """Curves, size and latency bars, student-vs-teacher confusion (when measured), configuration and
    artifact checksums; the numbers are report.json's. 404 until the job has a report."""
    if not job.report:
        raise NotFound(f"job {job.id} has no report yet (status {job.status})", code="report_not_ready")
    rows = session.scalars(select(Artifact).where(Artifact.job_id == job.id).order_by(Artifact.name)).all()
    artifacts = [ArtifactPublic.model_validate(a).model_dump(mode="json") for a in rows]
    try:
        page = render_report_html(job.report, JobPublic.model_validate(job).model_dump(mode="json"), artifacts)
    except Exception:  # a report of an unexpected shape (it comes from the job's sandboxed run): show it raw
        logger.exception("could not draw the report of job %s", job.id)
        page = _plain_report(job.id, job.report)
    return HTMLResponse(page, headers=REPORT_HEADERS)


def _plain_report(job_id: str, report: dict) -> str:
    """The report as escaped JSON, when its shape cannot be drawn."""
    body = html.escape(json.dumps(report, indent=2, default=str, allow_nan=True))
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Distillery report {html.escape(job_id)}</title></head><body><h1>Distillation report</h1>"
        "<p>The report's charts could not be drawn; its data:</p>"
        f"<pre>{body}</pre></body></html>"
    )
