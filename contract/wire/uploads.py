"""Uploaded models and datasets as clients see them (DESIGN.md: Model / Dataset)."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict

from contract.jobs import UploadStatus
from contract.wire.common import ErrorDetail, OutModel, Timestamp


class UploadPublic(OutModel):
    """Fields common to uploaded models and datasets."""

    id: str
    name: str
    format: str
    status: UploadStatus
    size_bytes: int
    sha256: str
    created_at: Timestamp
    error: ErrorDetail | None = None
    # What the sandboxed validation found (format, input shape and dtype, classes, rows, columns...): its keys
    # depend on the format, so it stays an open object.
    info: dict[str, Any] | None = None


class ModelPublic(UploadPublic):
    """An uploaded teacher or student model."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "mdl_01a228b730fb32ae985110c4",
                    "name": "teacher.pt",
                    "format": "torchscript",
                    "status": "ready",
                    "size_bytes": 84581,
                    "sha256": "b1cd89d8377244ed65c46c911a437cd1c5696a3c029abea5a952adade6ceae04",
                    "created_at": "2026-11-29T19:10:23.999610Z",
                    "error": None,
                    "info": {"format": "torchscript", "num_parameters": 19210, "input": None, "num_classes": None},
                }
            ]
        },
    )


class DatasetPublic(UploadPublic):
    """An uploaded dataset."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "dst_01a228b731f2cbe3bad7674e",
                    "name": "digits.npz",
                    "format": "npz",
                    "status": "ready",
                    "size_bytes": 116284,
                    "sha256": "5f0c7e3a9d1b2c4e6f8a0b1c3d5e7f9a1b3c5d7e9f0a2b4c6d8e0f1a3b5c7d9e",
                    "created_at": "2026-11-29T19:10:24.512034Z",
                    "error": None,
                    "info": {
                        "format": "npz",
                        "rows": 1797,
                        "columns": None,
                        "input": {"shape": [64], "dtype": "float32"},
                        "has_labels": True,
                        "num_classes": 10,
                        "classes": ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
                    },
                }
            ]
        },
    )
