"""The dashboard at `/`: one static page (plain HTML and JavaScript, no build step) on the public v1 API.

The page asks for an API key (kept in the browser's localStorage; `/?key=...` also sets it) and calls the
same /v1 routes as any client, with that key: the server renders no tenant data itself.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)

PAGE = Path(__file__).resolve().parent.parent / "static" / "dashboard.html"


@lru_cache
def _page() -> str:
    return PAGE.read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse)
def dashboard() -> HTMLResponse:
    """The dashboard page."""
    # No referrer: the page's URL may carry ?key=... for a moment before the script stores and strips it.
    return HTMLResponse(_page(), headers={"Cache-Control": "no-cache", "Referrer-Policy": "no-referrer",
                                          "X-Frame-Options": "DENY"})
