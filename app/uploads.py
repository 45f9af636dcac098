"""Multipart uploads streamed straight to disk, with a running sha256 and a hard size limit.

FastAPI's UploadFile spools the whole body before the route runs; here the route reads the request
stream itself, so memory stays flat and an oversized body is cut off as soon as it passes the limit.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from app.errors import PayloadTooLarge, Unprocessable

logger = logging.getLogger(__name__)

MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 64  # text fields of one form: the routes read fewer than ten
MAX_HEADER_BYTES = 16 * 1024  # one part's headers


@dataclass
class ReceivedFile:
    """A file part written to disk."""

    path: Path
    filename: str
    size_bytes: int = 0
    sha256: str = ""


@dataclass
class ReceivedForm:
    """The parts of a multipart body: files on disk, small text fields in memory."""

    workdir: Path
    files: dict[str, ReceivedFile] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)

    def cleanup(self) -> None:
        """Remove everything written for this request."""
        shutil.rmtree(self.workdir, ignore_errors=True)


class _PartWriter:
    """Receives one multipart body, part by part."""

    def __init__(self, form: ReceivedForm, file_fields: set[str]):
        self.form = form
        self.file_fields = file_fields
        self.header_field = b""
        self.header_value = b""
        self.headers: dict[bytes, bytes] = {}
        self.name = ""
        self.handle: IO[bytes] | None = None
        self.digest: hashlib._Hash | None = None
        self.current: ReceivedFile | None = None
        self.text = bytearray()

    def on_part_begin(self) -> None:
        self.headers = {}

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]
        self._check_header_size()

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]
        self._check_header_size()

    def _check_header_size(self) -> None:
        if len(self.header_field) + len(self.header_value) > MAX_HEADER_BYTES:
            raise Unprocessable(f"a multipart part header is longer than {MAX_HEADER_BYTES} bytes")

    def on_header_end(self) -> None:
        self.headers[self.header_field.lower()] = self.header_value
        self.header_field = self.header_value = b""
        if len(self.headers) > 16:
            raise Unprocessable("a multipart part has more than 16 headers")

    def on_headers_finished(self) -> None:
        _, params = parse_options_header(self.headers.get(b"content-disposition", b""))
        self.name = params.get(b"name", b"").decode("utf-8", "replace")
        filename = params.get(b"filename")
        if filename is not None:
            if self.name not in self.file_fields:
                raise Unprocessable(f"unexpected file field {self.name!r}; send {sorted(self.file_fields)}")
            if self.name in self.form.files:
                raise Unprocessable(f"file field {self.name!r} given twice")
            # The client's file name is kept only as a label; it never becomes a path.
            path = self.form.workdir / f"part-{self.name}"
            self.current = ReceivedFile(path=path, filename=os.path.basename(filename.decode("utf-8", "replace")))
            self.handle = open(path, "wb")  # noqa: SIM115 - closed in on_part_end
            self.digest = hashlib.sha256()
        else:
            if len(self.form.fields) >= MAX_FIELDS:
                raise Unprocessable(f"the form has more than {MAX_FIELDS} fields")
            self.current = None
            self.text = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self.current is not None:
            assert self.handle is not None and self.digest is not None  # opened with self.current
            self.handle.write(chunk)
            self.digest.update(chunk)
            self.current.size_bytes += len(chunk)
        else:
            self.text += chunk
            if len(self.text) > MAX_FIELD_BYTES:
                raise Unprocessable(f"form field {self.name!r} is longer than {MAX_FIELD_BYTES} bytes")

    def on_part_end(self) -> None:
        if self.current is not None:
            assert self.handle is not None and self.digest is not None  # opened with self.current
            self.handle.close()
            self.handle = None
            self.current.sha256 = self.digest.hexdigest()
            self.form.files[self.name] = self.current
            self.current = None
        else:
            self.form.fields[self.name] = self.text.decode("utf-8", "replace")

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


async def receive_form(request: Request, tmp_root: Path, max_bytes: int, file_fields: set[str]) -> ReceivedForm:
    """Stream a multipart/form-data body to a fresh folder under tmp_root; 413 past max_bytes."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise Unprocessable("send the upload as multipart/form-data with a 'file' field")
    tmp_root.mkdir(parents=True, exist_ok=True)
    form = ReceivedForm(workdir=Path(tempfile.mkdtemp(prefix="upload-", dir=tmp_root)))
    writer = _PartWriter(form, file_fields)
    callbacks = {
        name: getattr(writer, name)
        for name in (
            "on_part_begin",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
            "on_part_data",
            "on_part_end",
        )
    }
    received = 0
    try:
        # Refuses a boundary over 256 bytes. The stub wants its TypedDict; `callbacks` has exactly its keys.
        parser = MultipartParser(params[b"boundary"], callbacks)  # type: ignore[arg-type]
        # Content-Length is not trusted: the bytes actually read are counted.
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes:
                raise PayloadTooLarge(f"upload is larger than the limit of {max_bytes} bytes")
            parser.write(chunk)
        parser.finalize()
    except ClientDisconnect:
        writer.close()
        form.cleanup()
        raise Unprocessable("the client disconnected before the upload finished") from None
    except (PayloadTooLarge, Unprocessable):
        writer.close()
        form.cleanup()
        raise
    except (FormParserError, UnicodeError, ValueError) as exc:  # a malformed body, from python-multipart
        writer.close()
        form.cleanup()
        detail = f": {exc}" if isinstance(exc, FormParserError) and not isinstance(exc, OSError) else ""
        raise Unprocessable(
            f"malformed multipart/form-data body{detail}; send the file as the 'file' part of a "
            "multipart/form-data body (curl -F file=@data.npz)"
        ) from None
    except BaseException:  # our own failure (a full disk): a 500 whose text names no path
        writer.close()
        form.cleanup()
        raise
    logger.info("received upload of %d bytes", received)
    return form


def multipart_openapi(
    file_fields: dict[str, str], text_fields: dict[str, str], required: tuple[str, ...] = ("file",)
) -> dict:
    """The requestBody declaration of a streamed multipart route, for the OpenAPI schema."""
    properties = {
        name: {"type": "string", "format": "binary", "description": desc} for name, desc in file_fields.items()
    }
    properties |= {name: {"type": "string", "description": desc} for name, desc in text_fields.items()}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "required": list(required), "properties": properties}
                }
            },
        }
    }
