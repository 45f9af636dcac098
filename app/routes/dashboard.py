"""The dashboard at `/`: one static page (plain HTML and JavaScript, no build step) on the public v1 API.

The page asks for an API key (kept in the browser's localStorage; `/?key=...` also sets it) and calls the
same /v1 routes as any client, with that key: the server renders no tenant data itself.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)

PAGE = Path(__file__).resolve().parent.parent / "static" / "dashboard.html"


def script_hashes(page: str) -> list[str]:
    """CSP source expressions ('sha256-...') of the page's inline scripts, exactly as served."""
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode("utf-8")).digest()).decode() + "'"
        for body in re.findall(r"<script>(.*?)</script>", page, re.S)
    ]


def dashboard_csp(page: str) -> str:
    """The page's Content-Security-Policy: its own inline script (by hash) and fetches to this origin only.

    Styles may be inline: the page's <style>, the style attributes it renders, and the report it shows in a
    sandboxed srcdoc iframe (which inherits this policy) all are. Nothing else loads: no other script, no
    plugin, no form target, no framing by another site."""
    return "; ".join(
        [
            "default-src 'none'",
            "script-src " + " ".join(script_hashes(page)),
            "style-src 'unsafe-inline'",
            "connect-src 'self'",
            "img-src 'self' data: blob:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


@lru_cache
def _page() -> tuple[str, str]:
    page = PAGE.read_text(encoding="utf-8")
    return page, dashboard_csp(page)


@router.get("/", response_class=HTMLResponse)
def dashboard() -> HTMLResponse:
    """The dashboard page."""
    page, csp = _page()
    # No referrer: the page's URL may carry ?key=... for a moment before the script stores and strips it.
    return HTMLResponse(
        page,
        headers={
            "Cache-Control": "no-cache",
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": csp,
        },
    )
