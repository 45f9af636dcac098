"""The Python client of the Distillery API (sync, httpx). Never imports torch.

    from app.client import Distillery

    with Distillery() as api:                       # DISTILLERY_URL, DISTILLERY_API_KEY
        teacher = api.upload_model("teacher.pt")
        train = api.upload_dataset("train.csv", label_column="label")
        api.wait_ready(teacher, train)
        job = api.create_job(teacher.id, train.id, student="mlp:hidden_sizes=[32]",
                             hyperparameters={"epochs": 20})
        job = api.wait(job.id, on_event=print)
        api.download_artifact(job.id, "student.pt", "student.pt")
        print(api.report(job.id).student)

Every API error raises `DistilleryError(status, code, message)`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx
from pydantic import BaseModel, ConfigDict

from contract import TERMINAL
from contract.student_syntax import parse_student
from contract.wire import ArtifactPublic, DatasetPublic, EventPublic, JobPublic, ModelPublic

__all__ = [
    "Distillery",
    "DistilleryError",
    "Report",
    "Job",
    "Model",
    "Dataset",
    "Event",
    "Artifact",
    "DEFAULT_URL",
    "TERMINAL",
]

DEFAULT_URL = "http://127.0.0.1:8000"

Job = JobPublic
Model = ModelPublic
Dataset = DatasetPublic
Event = EventPublic
Artifact = ArtifactPublic
ByteProgress = Callable[[int, int], None]  # (bytes done, total bytes or 0 when unknown)


class Report(BaseModel):
    """The job's report (DESIGN.md "Report"); keys the engine adds later are kept as extras."""

    model_config = ConfigDict(extra="allow")

    job_id: str | None = None
    device: str | None = None
    train_seconds: float | None = None
    eval_examples: int | None = None
    classes: list[str] = []
    teacher: dict[str, Any] = {}
    student: dict[str, Any] = {}
    baseline: dict[str, Any] | None = None
    compression_ratio: float | None = None
    speedup: dict[str, float | None] = {}
    teacher_outputs_cache: str | None = None
    history: list[dict[str, Any]] = []

    def to_dict(self) -> dict:
        """The report exactly as the API sent it."""
        return self.model_dump(mode="json")


class DistilleryError(Exception):
    """An error answered by the API (or a transport failure, status 0)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{message} ({status} {code})" if status else message)
        self.status = status
        self.code = code
        self.message = message


class _ProgressFile:
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


def _raise_for(resp: httpx.Response) -> None:
    if resp.is_success:
        return
    try:
        resp.read()
        body = resp.json()
        err = body.get("error") or {}
        code, message = err.get("code") or "http_error", err.get("message") or resp.text
    except (ValueError, AttributeError):
        code, message = "http_error", resp.text.strip() or resp.reason_phrase
    raise DistilleryError(resp.status_code, code, message)


def _default_key() -> str | None:
    key = os.environ.get("DISTILLERY_API_KEY")
    if key:
        return key.strip()
    # `distillery up` keeps its key here; handy on the machine that runs the service.
    data_dir = Path(os.environ.get("DISTILLERY_DATA_DIR", ".distillery"))
    path = data_dir / "api_key"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


class Distillery:
    """A client for one service URL and one API key.

    `url` defaults to DISTILLERY_URL (else http://127.0.0.1:8000), `api_key` to DISTILLERY_API_KEY (else
    the key `distillery up` wrote in .distillery/api_key). `transport` goes to httpx (tests inject faults).
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ):
        self.url = (url or os.environ.get("DISTILLERY_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key or _default_key()
        headers = {"User-Agent": "distillery-client/1"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    # -- plumbing ---------------------------------------------------------------------------------------

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Distillery:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise DistilleryError(0, "connection_error", f"cannot reach {self.url}: {exc}") from exc
        _raise_for(resp)
        return resp

    def _json(self, method: str, path: str, **kwargs) -> Any:
        return self._request(method, path, **kwargs).json()

    # -- uploads ----------------------------------------------------------------------------------------

    def _upload(
        self,
        path: str,
        file: str | Path,
        fields: dict[str, Any],
        progress: ByteProgress | None,
        extra_files: dict[str, Path] | None = None,
    ) -> dict:
        file = Path(file)
        handles = []
        try:
            files = {}
            for field, part in {"file": file, **(extra_files or {})}.items():
                handle = open(part, "rb")  # noqa: SIM115 - closed below
                handles.append(handle)
                size = os.fstat(handle.fileno()).st_size
                wrapped = _ProgressFile(handle, size, progress if field == "file" else None)
                files[field] = (part.name, wrapped, "application/octet-stream")
            data = {k: str(v) for k, v in fields.items() if v is not None}
            # Uploads can be large: no overall timeout on the write, only on connect.
            return self._json("POST", path, files=files, data=data, timeout=httpx.Timeout(60.0, write=None, read=600.0))
        finally:
            for handle in handles:
                handle.close()

    def upload_model(self, file: str | Path, *, name: str | None = None, progress: ByteProgress | None = None) -> Model:
        """Upload a teacher or student model (TorchScript, .pt2, ONNX); it starts `validating`."""
        return Model.model_validate(self._upload("/v1/models", file, {"name": name}, progress))

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
        progress: ByteProgress | None = None,
    ) -> Dataset:
        """Upload data (.npz, CSV, JSONL, Parquet), with a tokenizer.json for a text column."""
        if isinstance(classes, list | tuple):
            classes = json.dumps(list(classes))
        fields = {
            "name": name,
            "label_column": label_column,
            "text_column": text_column,
            "max_length": max_length,
            "classes": classes,
        }
        extra = {"tokenizer": Path(tokenizer)} if tokenizer else None
        return Dataset.model_validate(self._upload("/v1/datasets", file, fields, progress, extra))

    def get_model(self, model_id: str) -> Model:
        return Model.model_validate(self._json("GET", f"/v1/models/{model_id}"))

    def get_dataset(self, dataset_id: str) -> Dataset:
        return Dataset.model_validate(self._json("GET", f"/v1/datasets/{dataset_id}"))

    def list_models(self, *, limit: int = 20, after: str | None = None) -> list[Model]:
        return [Model.model_validate(m) for m in self._page("/v1/models", limit=limit, after=after)]

    def list_datasets(self, *, limit: int = 20, after: str | None = None) -> list[Dataset]:
        return [Dataset.model_validate(d) for d in self._page("/v1/datasets", limit=limit, after=after)]

    def wait_ready(
        self, *uploads: Model | Dataset, timeout: float | None = 600, interval: float = 0.5, raise_invalid: bool = True
    ) -> list[Model | Dataset]:
        """Poll until every upload leaves `validating`; an `invalid` one raises DistilleryError(422)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        current = list(uploads)
        while True:
            current = [
                u
                if u.status != "validating"
                else self.get_model(u.id)
                if isinstance(u, ModelPublic)
                else self.get_dataset(u.id)
                for u in current
            ]
            if raise_invalid:
                for u in current:
                    if u.status == "invalid":
                        err = u.error or {}
                        raise DistilleryError(
                            422,
                            err.get("code", "invalid_upload"),
                            f"{u.name} ({u.id}) is invalid: {err.get('message', 'unknown error')}",
                        )
            if all(u.status != "validating" for u in current):
                return current
            if deadline is not None and time.monotonic() > deadline:
                raise DistilleryError(0, "timeout", "uploads still validating after the timeout")
            time.sleep(interval)

    # -- jobs ---------------------------------------------------------------------------------------------

    def create_job(
        self,
        teacher_id: str,
        train_dataset_id: str,
        *,
        eval_dataset_id: str | None = None,
        student: str | dict | None = None,
        hyperparameters: dict | None = None,
        export: list[str] | None = None,
        baseline: bool | None = None,
        idempotency_key: str | None = None,
        **extra: Any,
    ) -> Job:
        """Submit a job; `student` is a dict or the short syntax `'mlp:hidden_sizes=[32]'` (or JSON text)."""
        body: dict[str, Any] = {"teacher_id": teacher_id, "train_dataset_id": train_dataset_id}
        if eval_dataset_id:
            body["eval_dataset_id"] = eval_dataset_id
        if student is not None:
            body["student"] = parse_student(student) if isinstance(student, str) else student
        if hyperparameters:
            body["hyperparameters"] = hyperparameters
        if export is not None:
            body["export"] = export
        if baseline is not None:
            body["baseline"] = baseline
        body.update({k: v for k, v in extra.items() if v is not None})
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return Job.model_validate(self._json("POST", "/v1/jobs", json=body, headers=headers))

    def get_job(self, job_id: str) -> Job:
        return Job.model_validate(self._json("GET", f"/v1/jobs/{job_id}"))

    def list_jobs(self, *, status: str | None = None, limit: int = 20, after: str | None = None) -> list[Job]:
        rows = self._page("/v1/jobs", limit=limit, after=after, status=status)
        return [Job.model_validate(j) for j in rows]

    def cancel_job(self, job_id: str) -> Job:
        return Job.model_validate(self._json("POST", f"/v1/jobs/{job_id}/cancel"))

    def _page(self, path: str, **params: Any) -> list[dict]:
        return self._json("GET", path, params={k: v for k, v in params.items() if v is not None})["data"]

    def list_events(self, job_id: str, *, after: int = 0) -> list[Event]:
        """Every event recorded so far (JSON, paged through)."""
        out: list[Event] = []
        while True:
            page = self._json("GET", f"/v1/jobs/{job_id}/events", params={"after": after, "limit": 1000})
            out += [Event.model_validate(e) for e in page["data"]]
            if page.get("next_after") is None:
                return out
            after = page["next_after"]

    def events(
        self, job_id: str, *, after: int = 0, reconnect: bool = True, max_retries: int = 20, retry_delay: float = 0.5
    ) -> Iterator[Event]:
        """The job's events, live, as the server streams them; ends when the job has ended.

        A dropped connection is resumed with `Last-Event-ID` (the id of the last event received), so no event
        is missed or repeated. `after` starts after that event id.
        """
        last = after
        failures = 0
        while True:
            headers = {"Accept": "text/event-stream"}
            if last:
                headers["Last-Event-ID"] = str(last)
            try:
                with self.http.stream(
                    "GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=httpx.Timeout(60.0, read=60.0)
                ) as resp:
                    _raise_for(resp)
                    for kind, event_id, data in _parse_sse(resp.iter_lines()):
                        if kind == "end":
                            return
                        if event_id is None or not data:
                            continue
                        event = Event.model_validate_json(data)
                        if event.id <= last:
                            continue
                        last = event.id
                        failures = 0
                        yield event
                # The server closed without its `end` marker: treat it as a drop and resume.
                raise httpx.RemoteProtocolError("event stream closed before its end")
            except httpx.TransportError as exc:
                failures += 1
                if not reconnect or failures > max_retries:
                    raise DistilleryError(0, "connection_error", f"event stream of {job_id} lost: {exc}") from exc
                time.sleep(min(retry_delay * failures, 5.0))

    def wait(
        self, job_id: str, on_event: Callable[[Event], None] | None = None, *, timeout: float | None = None
    ) -> Job:
        """Block until the job ends, following its live events (`on_event` sees each); returns the job."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for event in self.events(job_id):
            if on_event is not None:
                on_event(event)
            if deadline is not None and time.monotonic() > deadline:
                raise DistilleryError(0, "timeout", f"job {job_id} still running after {timeout} s")
        job = self.get_job(job_id)
        while job.status not in TERMINAL:  # the stream ends with the job; this is only a safety net
            time.sleep(0.5)
            job = self.get_job(job_id)
        return job

    # -- results ------------------------------------------------------------------------------------------

    def list_artifacts(self, job_id: str) -> list[Artifact]:
        return [Artifact.model_validate(a) for a in self._json("GET", f"/v1/jobs/{job_id}/artifacts")["data"]]

    def download_artifact(
        self, job_id: str, name: str, dest: str | Path | None = None, *, progress: ByteProgress | None = None
    ) -> Path:
        """Stream an artifact to `dest` (a file, or a folder to put it in; default: the current folder)."""
        import hashlib

        folder = dest is None or str(dest).endswith(("/", os.sep))
        dest = Path(dest) if dest is not None else Path(".")
        if folder or dest.is_dir():
            dest = dest / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".part")
        digest = hashlib.sha256()
        try:
            with self.http.stream(
                "GET", f"/v1/jobs/{job_id}/artifacts/{name}", timeout=httpx.Timeout(60.0, read=600.0)
            ) as resp:
                _raise_for(resp)
                total = int(resp.headers.get("content-length") or 0)
                done = 0
                with open(partial, "wb") as f:
                    for chunk in resp.iter_bytes(1 << 16):
                        f.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        if progress:
                            progress(done, total)
                expected = resp.headers.get("x-checksum-sha256")
        except httpx.HTTPError as exc:
            partial.unlink(missing_ok=True)
            raise DistilleryError(0, "connection_error", f"download of {name} failed: {exc}") from exc
        if expected and expected != digest.hexdigest():
            partial.unlink(missing_ok=True)
            raise DistilleryError(0, "checksum_mismatch", f"{name}: sha256 differs from the server's")
        partial.replace(dest)
        return dest

    def report(self, job_id: str) -> Report:
        """The job's report; DistilleryError(404, 'report_not_ready') until it has one."""
        return Report.model_validate(self._json("GET", f"/v1/jobs/{job_id}/report"))

    def report_json(self, job_id: str) -> dict:
        """The report as the API's JSON, untouched."""
        return self._json("GET", f"/v1/jobs/{job_id}/report")

    def report_html(self, job_id: str) -> str:
        """The self-contained HTML report."""
        return self._request("GET", f"/v1/jobs/{job_id}/report.html").text


def _parse_sse(lines: Iterable[str]) -> Iterator[tuple[str, int | None, str]]:
    """(event type, id, data) for each server-sent event; comments and keep-alives are skipped."""
    kind, event_id, data = "message", None, []
    for line in lines:
        line = line.rstrip("\r")
        if not line:
            if data or kind != "message":
                yield kind, event_id, "\n".join(data)
            kind, event_id, data = "message", None, []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            kind = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            event_id = int(value) if value.isdigit() else None
