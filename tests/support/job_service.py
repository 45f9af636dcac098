"""Helpers of the tests that run whole jobs through a real service (tests/test_reliability.py, test_job_limits.py)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine

from tests.support.digits import digits_arrays, train_digits_teacher, write_npz
from tests.support.service import Client


def digits_files(folder: Path) -> dict:
    """A trained digits teacher and the train/eval splits, written under `folder`."""
    x_train, y_train, x_test, y_test = digits_arrays()
    return {
        "teacher": train_digits_teacher(folder),
        "train": write_npz(folder / "train.npz", x_train, y_train),
        "eval": write_npz(folder / "eval.npz", x_test, y_test),
    }


def upload_digits(client: Client, files: dict) -> dict:
    """Upload the digits files and wait until they are ready; the job's input ids."""
    return {
        "teacher_id": client.ready_upload("models", files["teacher"])["id"],
        "train_dataset_id": client.ready_upload("datasets", files["train"])["id"],
        "eval_dataset_id": client.ready_upload("datasets", files["eval"])["id"],
    }


def job_events(client: Client, job_id: str) -> list[dict]:
    """The job's events, up to 1000."""
    return client.http.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()["data"]


def claims(client: Client, job_id: str) -> int:
    """How many times a worker claimed the job (its `running` status events)."""
    return sum(1 for e in job_events(client, job_id) if e["type"] == "status" and e["data"]["status"] == "running")


def wait_epoch(client: Client, job_id: str, epoch: int, timeout: float = 120) -> dict:
    """Wait until the job is running and has finished `epoch` epochs (so a checkpoint exists)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.http.get(f"/v1/jobs/{job_id}").json()
        done = sum(1 for e in job_events(client, job_id) if e["type"] == "metrics")
        if job["status"] == "running" and done >= epoch:
            return job
        assert job["status"] in ("queued", "running"), job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never reached epoch {epoch}")


def service_db(service) -> object:
    """An SQLAlchemy engine on the service's database."""
    url = service.env.get("DISTILLERY_DATABASE_URL") or f"sqlite:///{service.data_dir / 'distillery.db'}"
    return create_engine(url)


def db_time(service, epoch_seconds: float):
    """A timestamp as the service's database keeps it."""
    value = datetime.fromtimestamp(epoch_seconds, UTC)
    # SQLite keeps naive UTC text (app.models.UTCDateTime); PostgreSQL takes the aware value.
    return value.replace(tzinfo=None) if "DISTILLERY_DATABASE_URL" not in service.env else value
