"""Large files straight to the object store: a presigned multipart upload.

POST /v1/uploads answers with one signed URL per part; each part's bytes are PUT to the store itself (never
through the API, and never with the API key), then /v1/uploads/{id}/complete registers the model or dataset.
A service whose files live on its own disk answers 409 `direct_upload_unavailable`, and the file is sent the
ordinary way.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from distillery_client.connection import Connection
from distillery_client.exceptions import DistilleryError
from distillery_client.shapes import ByteProgress

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 64 * 1024**2
THRESHOLD_ENV = "DISTILLERY_DIRECT_UPLOAD_THRESHOLD"
CHUNK = 1 << 20
PART_ATTEMPTS = 3


def direct_threshold(value: int | None) -> int:
    """Files over this many bytes go to the store: `value`, else DISTILLERY_DIRECT_UPLOAD_THRESHOLD, else 64 MiB."""
    if value is not None:
        return value
    configured = os.environ.get(THRESHOLD_ENV)
    return int(configured) if configured else DEFAULT_THRESHOLD


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def multipart_body(fields: dict[str, str], files: dict[str, Path]) -> tuple[bytes, str]:
    """A small multipart/form-data body (text fields and small files such as a tokenizer.json).

    httpx sends a form without files url-encoded; the service reads forms as multipart only."""
    boundary = uuid.uuid4().hex
    out = bytearray()
    for name, value in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += value.encode() + b"\r\n"
    for name, path in files.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{path.name}"\r\n'.encode()
        out += b"Content-Type: application/octet-stream\r\n\r\n" + path.read_bytes() + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def _part_bytes(path: Path, offset: int, length: int, on_chunk) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        fh.seek(offset)
        left = length
        while left > 0:
            chunk = fh.read(min(CHUNK, left))
            if not chunk:
                raise OSError(f"{path.name} became shorter while it was being uploaded")
            left -= len(chunk)
            on_chunk(len(chunk))
            yield chunk


def put_part(store: httpx.Client, url: str, path: Path, offset: int, length: int, on_chunk) -> str:
    """PUT one part to its signed URL, retrying a failed attempt; the ETag the store answered with."""
    for attempt in range(1, PART_ATTEMPTS + 1):
        sent = 0

        def counted(n: int) -> None:
            nonlocal sent
            sent += n
            on_chunk(n)

        try:
            resp = store.put(
                url, content=_part_bytes(path, offset, length, counted), headers={"Content-Length": str(length)}
            )
            if resp.status_code < 500 or attempt == PART_ATTEMPTS:
                if not resp.is_success:
                    raise DistilleryError(resp.status_code, "store_error", f"the store refused a part: {resp.text}")
                return resp.headers["ETag"]
        except httpx.TransportError as exc:
            if attempt == PART_ATTEMPTS:
                raise DistilleryError(0, "connection_error", f"cannot reach the store: {exc}") from exc
        on_chunk(-sent)  # this attempt's bytes are sent again
        logger.warning("part at offset %d failed (attempt %d); retrying", offset, attempt)
    raise AssertionError("unreachable")


def send_direct(
    conn: Connection,
    kind: str,
    path: Path,
    fields: dict[str, Any],
    extra_files: dict[str, Path] | None,
    progress: ByteProgress | None,
) -> httpx.Response | None:
    """Upload `path` through a presigned multipart upload; the completion's response, or None when the service
    offers no direct uploads (its files are on its own disk), for the caller to send the file as usual."""
    size = path.stat().st_size
    declared = {k: str(v) for k, v in fields.items() if v is not None}
    declared |= {"kind": kind, "size": str(size), "sha256": file_sha256(path), "filename": path.name}
    body, content_type = multipart_body(declared, extra_files or {})
    try:
        created = conn._json("POST", "/v1/uploads", content=body, headers={"Content-Type": content_type})
    except DistilleryError as exc:
        if exc.code == "direct_upload_unavailable" or exc.status == 404:  # a local store, or an older service
            return None
        raise
    done = 0

    def on_chunk(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, size)

    try:
        parts = []
        # No API key on these requests: the signed URL is the part's only credential.
        with httpx.Client(timeout=httpx.Timeout(60.0, write=None, read=600.0)) as store:
            for part in created["parts"]:
                offset = (part["number"] - 1) * created["part_size"]
                length = min(created["part_size"], size - offset)
                etag = put_part(store, part["url"], path, offset, length, on_chunk)
                parts.append({"number": part["number"], "etag": etag})
        return conn._request("POST", f"/v1/uploads/{created['id']}/complete", json={"parts": parts})
    except BaseException:
        try:  # drop the parts the store holds; the service's reaper would, after the upload's expiry
            conn._request("DELETE", f"/v1/uploads/{created['id']}")
        except DistilleryError:
            logger.warning("could not abort direct upload %s", created["id"])
        raise
