"""The presigned multipart upload flow driven with plain httpx, as any client would: create, PUT parts, complete."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from distillery_client.direct_upload import multipart_body

Chunks = Callable[[int, int], Iterator[bytes]]  # (offset, length) -> the file's bytes in that range


def create(http: httpx.Client, kind: str, size: int, sha256: str, **fields) -> httpx.Response:
    """POST /v1/uploads as a multipart form (a tokenizer path in `fields` is sent as the `tokenizer` file)."""
    tokenizer = fields.pop("tokenizer", None)
    data = {"kind": kind, "size": str(size), "sha256": sha256, **{k: str(v) for k, v in fields.items()}}
    body, content_type = multipart_body(data, {"tokenizer": Path(tokenizer)} if tokenizer else {})
    return http.post("/v1/uploads", content=body, headers={"Content-Type": content_type})


def put_parts(created: dict, size: int, chunks: Chunks) -> list[dict]:
    """PUT every part's bytes to its signed URL (no API key); the [{number, etag}] list to complete with."""
    parts = []
    with httpx.Client(timeout=600) as store:
        for part in created["parts"]:
            offset = (part["number"] - 1) * created["part_size"]
            length = min(created["part_size"], size - offset)
            resp = store.put(part["url"], content=chunks(offset, length), headers={"Content-Length": str(length)})
            assert resp.status_code == 200, resp.text
            parts.append({"number": part["number"], "etag": resp.headers["ETag"]})
    return parts


def file_chunks(path: Path) -> Chunks:
    """Chunks of a file on disk."""

    def read(offset: int, length: int) -> Iterator[bytes]:
        with open(path, "rb") as fh:
            fh.seek(offset)
            while length > 0:
                block = fh.read(min(1 << 20, length))
                length -= len(block)
                yield block

    return read


def send_file(http: httpx.Client, kind: str, path: Path, **fields) -> httpx.Response:
    """The whole flow for a file on disk; the completion's response."""
    size = path.stat().st_size
    created = create(http, kind, size, hashlib.sha256(path.read_bytes()).hexdigest(), **fields)
    assert created.status_code == 201, created.text
    parts = put_parts(created.json(), size, file_chunks(path))
    return http.post(f"/v1/uploads/{created.json()['id']}/complete", json={"parts": parts})
