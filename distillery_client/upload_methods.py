"""Models and datasets: streamed uploads with byte progress, reads, lists, deletes, and waiting for validation."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Literal

import httpx

from distillery_client import direct_upload
from distillery_client.connection import Connection
from distillery_client.exceptions import DistilleryError
from distillery_client.shapes import ByteProgress, Dataset, Model

Reused = Callable[[Any], None]  # called with the Model or Dataset the service already held (same sha256)


class ProgressFile:
    """A file object that reports how many bytes httpx has read from it (uploads stream from disk)."""

    def __init__(self, handle: BinaryIO, total: int, callback: ByteProgress | None):
        self.handle, self.total, self.callback, self.done = handle, total, callback, 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.handle.read(size)
        self.done += len(chunk)
        if self.callback and chunk:
            self.callback(self.done, self.total)
        return chunk

    def seek(self, offset: int, whence: int = 0) -> int:
        position = self.handle.seek(offset, whence)
        if whence == 0:
            self.done = position
        return position

    def tell(self) -> int:
        return self.handle.tell()

    def fileno(self) -> int:
        return self.handle.fileno()


class UploadMethods(Connection):
    """/v1/models and /v1/datasets."""

    def _upload(
        self,
        path: str,
        file: str | Path,
        fields: dict[str, Any],
        progress: ByteProgress | None,
        extra_files: dict[str, Path] | None = None,
        direct_threshold: int | None = None,
    ) -> httpx.Response:
        if not self._access_checked:  # a wrong key or URL fails now, not after streaming a large file
            self.check_access()
        file = Path(file)
        if file.stat().st_size > direct_upload.direct_threshold(direct_threshold):
            kind = "model" if path == "/v1/models" else "dataset"
            sent = direct_upload.send_direct(self, kind, file, fields, extra_files, progress)
            if sent is not None:
                return sent
        handles = []
        try:
            files = {}
            for field, part in {"file": file, **(extra_files or {})}.items():
                handle = open(part, "rb")  # noqa: SIM115 - closed below
                handles.append(handle)
                size = os.fstat(handle.fileno()).st_size
                wrapped = ProgressFile(handle, size, progress if field == "file" else None)
                files[field] = (part.name, wrapped, "application/octet-stream")
            data = {k: str(v) for k, v in fields.items() if v is not None}
            # Uploads can be large: no overall timeout on the write, only on connect.
            timeout = httpx.Timeout(60.0, write=None, read=600.0)
            return self._request("POST", path, files=files, data=data, timeout=timeout)
        finally:
            for handle in handles:
                handle.close()

    def upload_model(
        self,
        file: str | Path,
        *,
        name: str | None = None,
        progress: ByteProgress | None = None,
        on_reused: Reused | None = None,
        direct_threshold: int | None = None,
    ) -> Model:
        """Upload a teacher or student model (TorchScript, .pt2, ONNX); it starts `validating`.

        When the service already holds the same bytes (it answers 200, not 201), it returns that model and
        `on_reused` is called with it. A file over `direct_threshold` bytes (default: the
        DISTILLERY_DIRECT_UPLOAD_THRESHOLD variable, else 64 MiB) goes straight to the service's object store in
        parts, if it has one.
        """
        resp = self._upload("/v1/models", file, {"name": name}, progress, direct_threshold=direct_threshold)
        model = Model.model_validate(resp.json())
        if resp.status_code == 200 and on_reused is not None:
            on_reused(model)
        return model

    def upload_dataset(
        self,
        file: str | Path,
        *,
        name: str | None = None,
        tokenizer: str | Path | None = None,
        label_column: str | None = None,
        text_column: str | None = None,
        max_length: int | None = None,
        classes: list[str] | str | None = None,
        tokenizer_from: Literal["teacher"] | None = None,
        progress: ByteProgress | None = None,
        on_reused: Reused | None = None,
        direct_threshold: int | None = None,
    ) -> Dataset:
        """Upload data (.npz, CSV, JSONL, Parquet), with a tokenizer.json for a text column (or, for a Hugging Face
        teacher, `tokenizer_from="teacher"`: the job tokenises the text with the teacher's own tokenizer).

        Identical bytes and options answer 200 with the existing dataset, which `on_reused` is given. A file over
        `direct_threshold` bytes goes straight to the service's object store, as for upload_model.
        """
        if isinstance(classes, list | tuple):
            classes = json.dumps(list(classes))
        fields = {
            "name": name,
            "label_column": label_column,
            "text_column": text_column,
            "max_length": max_length,
            "classes": classes,
            "tokenizer_from": tokenizer_from,
        }
        extra = {"tokenizer": Path(tokenizer)} if tokenizer else None
        resp = self._upload("/v1/datasets", file, fields, progress, extra, direct_threshold)
        dataset = Dataset.model_validate(resp.json())
        if resp.status_code == 200 and on_reused is not None:
            on_reused(dataset)
        return dataset

    def get_model(self, model_id: str) -> Model:
        """One model by id."""
        return Model.model_validate(self._json("GET", f"/v1/models/{model_id}"))

    def get_dataset(self, dataset_id: str) -> Dataset:
        """One dataset by id."""
        return Dataset.model_validate(self._json("GET", f"/v1/datasets/{dataset_id}"))

    def list_models(self, *, limit: int = 20, after: str | None = None) -> list[Model]:
        """Uploaded models, newest first."""
        return [Model.model_validate(m) for m in self._page("/v1/models", limit=limit, after=after)]

    def list_datasets(self, *, limit: int = 20, after: str | None = None) -> list[Dataset]:
        """Uploaded datasets, newest first."""
        return [Dataset.model_validate(d) for d in self._page("/v1/datasets", limit=limit, after=after)]

    def delete_model(self, model_id: str) -> None:
        """Delete a model (409 while a queued or running job uses it)."""
        self._request("DELETE", f"/v1/models/{model_id}")

    def delete_dataset(self, dataset_id: str) -> None:
        """Delete a dataset (409 while a queued or running job uses it)."""
        self._request("DELETE", f"/v1/datasets/{dataset_id}")

    def _refresh(self, upload: Model | Dataset) -> Model | Dataset:
        if upload.status != "validating":
            return upload
        return self.get_model(upload.id) if isinstance(upload, Model) else self.get_dataset(upload.id)

    def wait_ready(
        self, *uploads: Model | Dataset, timeout: float | None = 600, interval: float = 0.5, raise_invalid: bool = True
    ) -> list[Model | Dataset]:
        """Poll until every upload leaves `validating`; an `invalid` one raises DistilleryError(422)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        current = list(uploads)
        while True:
            current = [self._refresh(u) for u in current]
            if raise_invalid:
                for u in current:
                    if u.status == "invalid":
                        # `error` is the contract's ErrorDetail (code, message) since the wire shapes are typed.
                        code = u.error.code if u.error else "invalid_upload"
                        message = u.error.message if u.error else "unknown error"
                        raise DistilleryError(422, code, f"{u.name} ({u.id}) is invalid: {message}")
            if all(u.status != "validating" for u in current):
                return current
            if deadline is not None and time.monotonic() > deadline:
                raise DistilleryError(0, "timeout", "uploads still validating after the timeout")
            time.sleep(interval)
