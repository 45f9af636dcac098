"""Keep API keys out of log lines.

The dashboard accepts `/?key=...` once (its script stores the key and strips it from the address bar), and
uvicorn's access log writes every request's full path, query string included. A filter on the access and
server loggers, and on the handlers that print them, rewrites `key=` query values, `Bearer` tokens and
anything shaped like a Distillery key or webhook secret before a line is formatted.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

REDACTED = "[redacted]"
# `key=...` (and the usual spellings of a token parameter) in a query string or form body.
_QUERY_SECRET = re.compile(
    r"(?i)((?:^|[?&;\s\"'])(?:key|api_key|apikey|api-key|token|access_token|secret)=)[^&;#\s\"']*"
)
_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s\"',;]+")
# API keys are `dk_` + urlsafe base64 (app/auth.py); webhook secrets `whsec_` + base64 (app/webhooks.py).
_TOKEN = re.compile(r"\b(dk_|whsec_)[A-Za-z0-9_\-+/=%]{8,}")
# uvicorn's access and server loggers, and ours that log a request's path (app.errors: unhandled errors).
LOGGERS = ("uvicorn.access", "uvicorn.error", "uvicorn", "gunicorn.access", "gunicorn.error", "app.errors")


def redact(text: str) -> str:
    """`text` with key query values, bearer tokens and key-shaped strings replaced."""
    if not text:
        return text
    text = _QUERY_SECRET.sub(lambda m: m.group(1) + REDACTED, text)
    text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    return _TOKEN.sub(lambda m: m.group(1) + REDACTED, text)


def _redact_arg(value: object) -> object:
    return redact(value) if isinstance(value, str) else value


class RedactSecrets(logging.Filter):
    """Rewrites a record's message, string arguments and traceback in place; never drops a record.

    The arguments keep their types and positions: uvicorn's access formatter unpacks them. The traceback is
    formatted here (formatters reuse a record's exc_text): an exception's text may quote the request."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(a) for a in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {k: _redact_arg(v) for k, v in record.args.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FORMATTER = logging.Formatter()


_FILTER = RedactSecrets()


def _add(target: logging.Filterer) -> None:
    if not any(isinstance(f, RedactSecrets) for f in target.filters):
        target.addFilter(_FILTER)


def install_log_redaction() -> None:
    """Add the filter to the server's loggers and to every handler now attached to them or to the root.

    A logger's filter sees the records logged on it (uvicorn's access lines) and survives uvicorn's
    dictConfig; a handler's filter also sees records propagated from other loggers. Idempotent."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        _add(logger)
        for handler in logger.handlers:
            _add(handler)
    for handler in logging.getLogger().handlers:
        _add(handler)
    if logging.lastResort is not None:  # what prints a record when no handler is configured
        _add(logging.lastResort)
