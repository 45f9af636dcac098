"""Whether this worker may run code-bearing uploads (TorchScript, .pt2, uploaded students) at all.

With bubblewrap, every upload runs in a sandbox that sees only its own folder: all formats are fine. Without it
(a laptop, the embedded default on a fresh machine) a child can read what the worker can. That is acceptable
while the service has a single tenant (the files are all theirs), with a loud warning; once a second tenant key
exists, code-bearing formats are refused unless the operator says otherwise (DISTILLERY_ALLOW_UNSANDBOXED=1).
"""

from __future__ import annotations

import logging

from sqlalchemy import func, select

from app.db import get_sessionmaker
from app.models import Tenant
from app.settings import get_settings
from worker.sandbox import configured_mechanism

logger = logging.getLogger(__name__)

CODE_BEARING_FORMATS = ("torchscript", "pt2")


def code_bearing_refusal(what: str) -> dict | None:
    """{"code", "message"} when `what` (a code-bearing upload) may not run here; None when it may."""
    mechanism = configured_mechanism()
    if mechanism == "bwrap":
        return None
    if get_settings().allow_unsandboxed:
        logger.warning(
            "no bubblewrap sandbox (%s): %s runs unsandboxed because DISTILLERY_ALLOW_UNSANDBOXED is set",
            mechanism,
            what,
        )
        return None
    with get_sessionmaker()() as session:
        tenants = session.scalar(select(func.count()).select_from(Tenant)) or 0
    if tenants <= 1:
        logger.warning(
            "NO SANDBOX: bubblewrap is not available (%s), so %s runs with the worker's view of the file system. "
            "Fine for a single tenant; install bubblewrap before adding another",
            mechanism,
            what,
        )
        return None
    return {
        "code": "sandbox_unavailable",
        "message": f"{what} carries code, and this server has no working sandbox (bubblewrap) while it serves "
        "more than one tenant, so it is refused; upload an ONNX model instead, or ask the operator to install "
        "bubblewrap",
    }
