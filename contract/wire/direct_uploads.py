"""Presigned multipart uploads: a large file goes from the client straight to the object store, in parts."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from contract.wire.common import OutModel, Timestamp

# S3's bounds on a multipart upload (the other S3-compatible stores keep them).
MAX_PARTS = 10_000
MIN_PART_BYTES = 5 * 1024**2


class UploadPart(BaseModel):
    """Where to PUT one part: bytes [(number - 1) * part_size, number * part_size) of the file."""

    number: int = Field(ge=1, le=MAX_PARTS)
    url: str


class DirectUploadPublic(OutModel):
    """An upload in progress: PUT each part's bytes to its URL (the answer's ETag header is the part's etag),
    then POST the etags to /v1/uploads/{id}/complete before `expires_at`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "upl_019ad2c4f1a2b3c4d5e6f708",
                    "kind": "model",
                    "name": "teacher.onnx",
                    "size_bytes": 10737418240,
                    "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                    "part_size": 67108864,
                    "parts": [
                        {
                            "number": 1,
                            "url": "https://bucket.s3.amazonaws.com/t/models/mdl_1/model.bin?partNumber=1&...",
                        },
                        {
                            "number": 2,
                            "url": "https://bucket.s3.amazonaws.com/t/models/mdl_1/model.bin?partNumber=2&...",
                        },
                    ],
                    "created_at": "2026-12-01T01:00:00Z",
                    "expires_at": "2026-12-02T01:00:00Z",
                }
            ]
        },
    )

    id: str
    kind: Literal["model", "dataset"]
    name: str
    size_bytes: int
    sha256: str
    part_size: int
    parts: list[UploadPart]
    created_at: Timestamp
    expires_at: Timestamp


class CompletedPart(BaseModel):
    """A part the store received: its number and the ETag the store answered its PUT with."""

    model_config = ConfigDict(extra="forbid")

    number: int = Field(ge=1, le=MAX_PARTS)
    etag: str = Field(min_length=1, max_length=256)


class DirectUploadComplete(BaseModel):
    """Every part of the file, each once."""

    model_config = ConfigDict(extra="forbid")

    parts: list[CompletedPart] = Field(min_length=1, max_length=MAX_PARTS)
