"""Jobs: create, read, list, cancel, their events (paged or live) and waiting for the end."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from contract import TERMINAL
from contract.student_syntax import parse_student
from distillery_client.connection import Connection
from distillery_client.exceptions import DistilleryError, raise_for_response
from distillery_client.shapes import Event, Job
from distillery_client.sse import parse_sse


class JobMethods(Connection):
    """/v1/jobs."""

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
        gpus: int | None = None,
        idempotency_key: str | None = None,
        lm: dict | None = None,
        **extra: Any,
    ) -> Job:
        """Submit a job; `student` is a dict or the short syntax `'mlp:hidden_sizes=[32]'` (or JSON text).

        `gpus`: 0 runs it on a CPU worker, N on a worker with at least N GPUs; None lets any worker take it.
        `lm`: a causal-LM teacher's settings (contract.wire.LMOptions: method, epochs, temperature, ...).
        """
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
        if gpus is not None:
            body["resources"] = {"gpus": gpus}
        if lm is not None:
            body["lm"] = lm
        body.update({k: v for k, v in extra.items() if v is not None})
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return Job.model_validate(self._json("POST", "/v1/jobs", json=body, headers=headers))

    def get_job(self, job_id: str) -> Job:
        """One job by id."""
        return Job.model_validate(self._json("GET", f"/v1/jobs/{job_id}"))

    def list_jobs(self, *, status: str | None = None, limit: int = 20, after: str | None = None) -> list[Job]:
        """Jobs, newest first, optionally of one status."""
        rows = self._page("/v1/jobs", limit=limit, after=after, status=status)
        return [Job.model_validate(j) for j in rows]

    def cancel_job(self, job_id: str) -> Job:
        """Cancel a queued or running job (409 once it has ended)."""
        return Job.model_validate(self._json("POST", f"/v1/jobs/{job_id}/cancel"))

    def list_events(self, job_id: str, *, after: int = 0) -> list[Event]:
        """Every event recorded so far (JSON, paged through)."""
        out: list[Event] = []
        while True:
            page = self._json("GET", f"/v1/jobs/{job_id}/events", params={"after": after, "limit": 1000})
            out += [Event.model_validate(e) for e in page["data"]]
            if page.get("next_after") is None:
                return out
            after = page["next_after"]

    def _stream_events(self, job_id: str, last: int) -> Iterator[Event | None]:
        """One connection's events after `last`; yields None at the stream's `end` marker."""
        headers = {"Accept": "text/event-stream"}
        if last:
            headers["Last-Event-ID"] = str(last)
        timeout = httpx.Timeout(60.0, read=60.0)
        with self.http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=timeout) as resp:
            raise_for_response(resp)
            for kind, event_id, data in parse_sse(resp.iter_lines()):
                if kind == "end":
                    yield None
                    return
                if event_id is not None and data:
                    yield Event.model_validate_json(data)
        # The server closed without its `end` marker: treat it as a drop and resume.
        raise httpx.RemoteProtocolError("event stream closed before its end")

    def events(
        self, job_id: str, *, after: int = 0, reconnect: bool = True, max_retries: int = 20, retry_delay: float = 0.5
    ) -> Iterator[Event]:
        """The job's events, live, as the server streams them; ends when the job has ended.

        A dropped connection is resumed with `Last-Event-ID` (the id of the last event received), so no event
        is missed or repeated. `after` starts after that event id.
        """
        last, failures = after, 0
        while True:
            try:
                for event in self._stream_events(job_id, last):
                    if event is None:
                        return
                    if event.id <= last:
                        continue
                    last, failures = event.id, 0
                    yield event
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
