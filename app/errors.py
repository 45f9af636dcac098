"""Domain errors carry their HTTP status; one handler turns them into the error envelope."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """An error a client can act on; `status` is the HTTP status it answers with."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.headers = headers


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class Unprocessable(ApiError):
    status, code = 422, "invalid_request"


class TooManyRequests(ApiError):
    status, code = 429, "too_many_requests"


def error_body(code: str, message: str) -> dict:
    """The one error envelope of the wire contract."""
    return {"error": {"code": code, "message": message}}


MAX_REPORTED_ERRORS = 10
MAX_LOC_CHARS = 200


def _format_validation(exc: RequestValidationError) -> str:
    """The first few problems, `location: what is wrong` (a body with 10k unknown keys gets a short answer)."""
    errors = exc.errors()
    parts = []
    for err in errors[:MAX_REPORTED_ERRORS]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")[:MAX_LOC_CHARS]
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    if len(errors) > MAX_REPORTED_ERRORS:
        parts.append(f"and {len(errors) - MAX_REPORTED_ERRORS} more")
    return "; ".join(parts) or "invalid request"


def _json_position(doc: object, pos: object) -> str:
    """` at line L column C` of character `pos` of the body, counted as an editor counts them."""
    if not isinstance(pos, int):
        return ""
    text = doc.decode("utf-8", "replace") if isinstance(doc, bytes) else doc
    if not isinstance(text, str) or pos > len(text):
        return f" at character {pos}"
    line = text.count("\n", 0, pos) + 1
    column = pos - text.rfind("\n", 0, pos)
    return f" at line {line} column {column}"


def invalid_json(exc: RequestValidationError) -> JSONResponse | None:
    """400 `invalid_json` when the body is not JSON at all (FastAPI reports it as a validation error)."""
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            reason = (err.get("ctx") or {}).get("error") or "syntax error"
            loc = err.get("loc") or ()
            where = _json_position(exc.body, loc[-1] if loc else None)
            return JSONResponse(
                error_body("invalid_json", f"the request body is not valid JSON: {reason}{where}"), status_code=400
            )
    return None


# Why FastAPI could not read a JSON body it did not answer as `json_invalid` (it raises a bare 400 from these).
_UNREADABLE_BODY = {
    UnicodeDecodeError: "it is not UTF-8 text",
    RecursionError: "it is nested too deeply",
}


def install_handlers(app: FastAPI) -> None:
    """Replace FastAPI's `{"detail": ...}` bodies with the error envelope."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        if (response := invalid_json(exc)) is not None:
            return response
        return JSONResponse(error_body("invalid_request", _format_validation(exc)), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        cause = exc.__cause__
        if exc.status_code == 400 and cause is not None:
            reason = next((text for kind, text in _UNREADABLE_BODY.items() if isinstance(cause, kind)), None)
            if reason:
                return JSONResponse(
                    error_body("invalid_json", f"the request body is not valid JSON: {reason}"), status_code=400
                )
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}.get(
            exc.status_code, "error"
        )
        return JSONResponse(
            error_body(code, str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The exception's text and stack go to the log only: they name server paths and library internals.
        logger.exception("unhandled error in %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal", "internal server error"), status_code=500)
