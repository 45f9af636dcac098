"""The states of a job and of an upload, and the phases a running job moves through (DESIGN.md, "Resources and
states")."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    """`queued -> running -> succeeded | failed | cancelled`, and `running -> queued` when a worker is lost."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


# Plain strings, so that they bind as they are in SQL (`Job.status.in_(ACTIVE)`) and compare with any row.
JOB_STATUSES: tuple[str, ...] = tuple(status.value for status in JobStatus)
ACTIVE: tuple[str, ...] = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
TERMINAL: tuple[str, ...] = (JobStatus.SUCCEEDED.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value)


class Phase(StrEnum):
    """Where a running job is, in the order it gets there."""

    VALIDATING = "validating"
    TEACHER_OUTPUTS = "teacher_outputs"
    TRAINING = "training"
    EVALUATING = "evaluating"
    EXPORTING = "exporting"


PHASES: tuple[str, ...] = tuple(phase.value for phase in Phase)


class UploadStatus(StrEnum):
    """`validating -> ready | invalid`: a worker opens every upload in a sandbox before a job may use it."""

    VALIDATING = "validating"
    READY = "ready"
    INVALID = "invalid"


UPLOAD_STATUSES: tuple[str, ...] = tuple(status.value for status in UploadStatus)
