"""The job adapter: claim the row, run the job in its sandboxed child (worker/supervisor.py), record the outcome.

The worker never opens an upload: the child does everything that reads one (DESIGN.md, Trust boundary). Every
write after the claim is fenced by (status = running, attempt = ours): a worker that lost the job (cancelled, or
requeued to another attempt) cannot overwrite what the newer owner wrote.
"""

from __future__ import annotations

import logging
import re
import stat
import threading
import time
from pathlib import Path

from sqlalchemy import func, update

from app.db import get_sessionmaker
from app.jobs import add_event
from app.models import Artifact, Dataset, Job, Model, utcnow
from app.queue import enqueue_job
from app.settings import get_settings
from app.storage import LocalStorage, sha256_file
from app.webhooks import notify_job_ended
from worker.celery_app import HANDOFF, WORKER_ID
from worker.sandbox_policy import CODE_BEARING_FORMATS, code_bearing_refusal
from worker.supervisor import Outcome, Supervisor, host_has_gpu, job_limits, stage
from worker.validate import data_limits, dataset_spec_options

logger = logging.getLogger(__name__)

ARTIFACT_FORMATS = {
    ".pt": "torchscript",
    ".pt2": "pt2",
    ".onnx": "onnx",
    ".safetensors": "safetensors",
    ".json": "json",
    ".html": "html",
}


class JobRecorder:
    """Writes a running job's progress, metrics and events, throttled and fenced by attempt."""

    def __init__(self, job_id: str, attempt: int, deadline: float | None = None):
        self.job_id, self.attempt = job_id, attempt
        self.interval = get_settings().progress_interval_s
        self.last_progress = 0.0
        self.last_check = 0.0
        self.lost = False
        self.deadline = deadline  # time.monotonic() past which the job fails with `timeout`
        self.stop_reason: str | None = None  # lost | shutdown | timeout
        self.pending_progress: dict | None = None

    def fenced_update(self, session, **values) -> bool:
        """Update the job row only while this attempt still owns it."""
        result = session.execute(
            update(Job)
            .where(Job.id == self.job_id, Job.attempt == self.attempt, Job.status == "running")
            .values(heartbeat_at=utcnow(), **values)
        )
        return result.rowcount == 1

    def __call__(self, event) -> None:
        """The engine's progress callback."""
        now = time.monotonic()
        if event.type == "progress" and now - self.last_progress < self.interval:
            self.pending_progress = event.data  # written with the epoch's metrics, at the latest
            return
        values: dict = {}
        if event.type == "phase":
            values["phase"] = event.data.get("phase")
        elif event.type == "progress":
            values["progress"] = event.data
            self.last_progress = now
            self.pending_progress = None
        elif event.type == "metrics":
            values["metrics"] = {
                k: event.data.get(k) for k in ("train_loss", "validation_accuracy", "validation_agreement")
            }
            if self.pending_progress is not None:  # epoch ends always carry the latest progress
                values["progress"], self.pending_progress = self.pending_progress, None
        level = "warning" if event.type == "warning" else "info"
        type_ = "resume" if event.data.get("resumed") else event.type
        with get_sessionmaker()() as session:
            if not self.fenced_update(session, **values):
                session.rollback()
                self.lost = True
                return
            add_event(session, self.job_id, type_, event.message, event.data, level=level)
            session.commit()

    def should_stop(self) -> bool:
        """Polled while the child runs: lost lease or cancel, worker shutdown, or the runtime limit."""
        if self.stop_reason:
            return True
        if HANDOFF.is_set():
            self.stop_reason = "shutdown"
        elif self.deadline is not None and time.monotonic() > self.deadline:
            self.stop_reason = "timeout"
        elif self.lost:
            self.stop_reason = "lost"
        elif time.monotonic() - self.last_check >= 0.5:  # the row is read at most twice a second
            self.last_check = time.monotonic()
            with get_sessionmaker()() as session:
                row = session.get(Job, self.job_id)
                if row is None or row.status != "running" or row.attempt != self.attempt:
                    self.lost, self.stop_reason = True, "lost"
        return self.stop_reason is not None


def claim(job_id: str) -> Job | None:
    """Compare-and-set queued -> running; None when another delivery or worker already has it."""
    with get_sessionmaker()() as session:
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "queued")
            .values(
                status="running",
                attempt=Job.attempt + 1,
                worker_id=WORKER_ID,
                phase="validating",
                started_at=func.coalesce(Job.started_at, utcnow()),
                heartbeat_at=utcnow(),
            )
        )
        if result.rowcount != 1:
            session.rollback()
            return None
        job = session.get(Job, job_id)
        # The worker's name (host:pid) is the operator's business: it goes to the log, not to the user.
        logger.info("job %s running on %s (attempt %d)", job_id, WORKER_ID, job.attempt)
        add_event(
            session,
            job_id,
            "status",
            f"job running (attempt {job.attempt})",
            {"status": "running", "attempt": job.attempt},
        )
        session.commit()
        return job


def _heartbeat(recorder: JobRecorder, stop: threading.Event) -> None:
    settings = get_settings()
    while not stop.wait(settings.worker_heartbeat_interval_s):
        try:
            if not recorder.lost:
                with get_sessionmaker()() as session:
                    if recorder.fenced_update(session):
                        session.commit()
                    else:
                        recorder.lost = True  # cancelled or reassigned: the child is asked to stop
        except Exception:
            logger.exception("job heartbeat failed")


def _child_stop_reason(recorder: JobRecorder) -> str | None:
    """What the child's stop file says: cancel (salvage the student), lost, shutdown or timeout; None: go on."""
    if not recorder.should_stop():
        return None
    if recorder.stop_reason == "lost":
        with get_sessionmaker()() as session:
            row = session.get(Job, recorder.job_id)
            if row is not None and row.status == "cancelled" and row.attempt == recorder.attempt:
                return "cancel"
    return recorder.stop_reason


def _stage(job: Job, storage: LocalStorage):
    """The job's folder laid out for its child; (staged, None) or (None, {"code", "message"}) when it cannot run."""
    with get_sessionmaker()() as session:
        teacher = session.get(Model, job.teacher_id)
        train = session.get(Dataset, job.train_dataset_id)
        eval_ = session.get(Dataset, job.eval_dataset_id) if job.eval_dataset_id else None
        student_model = session.get(Model, job.student["model_id"]) if job.student.get("model_id") else None
    missing = [what for what, row in (("teacher", teacher), ("train dataset", train)) if row is None]
    if job.eval_dataset_id and eval_ is None:
        missing.append("eval dataset")
    if job.student.get("model_id") and student_model is None:
        missing.append("student model")
    if missing:
        return None, {"code": "input_deleted", "message": f"the job's {', '.join(missing)} was deleted"}
    for what, row in (("the teacher", teacher), ("the uploaded student", student_model)):
        if row is not None and (row.format in CODE_BEARING_FORMATS or what == "the uploaded student"):
            refusal = code_bearing_refusal(f"{what} ({row.format})")
            if refusal:
                return None, refusal

    def spec(row: Dataset) -> dict:
        return {"path": str(storage.path(row.path)), **dataset_spec_options(row, storage)}

    settings = get_settings()
    config = {**job.hyperparameters, "student": dict(job.student), "export": job.export, "baseline": job.baseline}
    staged = stage(
        storage.job_dir(job.tenant_id, job.id),
        job.attempt,
        teacher=storage.path(teacher.path),
        train=spec(train),
        evaluation=spec(eval_) if eval_ else None,
        config=config,
        student_model=storage.path(student_model.path) if student_model else None,
        cache_dir=storage.cache_dir(job.tenant_id),
        extra={"max_student_parameters": settings.max_student_parameters, "data_limits": data_limits(settings)},
    )
    return staged, None


MAX_ARTIFACTS = 64
ARTIFACT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def record_artifacts(session, job_id: str, out_dir: Path, storage: LocalStorage) -> None:
    """One artifact row per file the job child wrote, with size and sha256.

    The child is untrusted: only plain files with plain names count (never a link, which could point at another
    tenant's file, nor a hard link), and at most MAX_ARTIFACTS of them.
    """
    if not out_dir.is_dir() or out_dir.is_symlink():
        return
    kept = 0
    for path in sorted(out_dir.iterdir()):
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or not ARTIFACT_NAME.match(path.name):
            logger.warning("job %s: %r in its artifacts is not a plain file; ignored", job_id, path.name)
            continue
        if kept >= MAX_ARTIFACTS:
            logger.warning("job %s wrote more than %d artifacts; the rest are ignored", job_id, MAX_ARTIFACTS)
            break
        kept += 1
        fmt = "int8-onnx" if path.name.endswith(".int8.onnx") else ARTIFACT_FORMATS.get(path.suffix, "file")
        session.add(
            Artifact(
                job_id=job_id,
                name=path.name,
                format=fmt,
                size_bytes=info.st_size,
                sha256=sha256_file(path),
                path=storage.relative(path),
            )
        )


def finish(recorder: JobRecorder, status: str, with_session=None, **values) -> bool:
    """End the job (fenced); False when it was no longer ours.

    `with_session(session) -> dict` runs in the same transaction first (it may add rows, e.g. artifacts) and
    returns more column values, so that what it wrote commits only if the fence holds.
    """
    with get_sessionmaker()() as session:
        if with_session is not None:
            values = {**values, **with_session(session)}
        if not recorder.fenced_update(session, status=status, phase=None, finished_at=utcnow(), **values):
            session.rollback()
            return False
        message = f"job {status}" + (f": {values['error']['message']}" if values.get("error") else "")
        add_event(
            session,
            recorder.job_id,
            "status",
            message,
            {"status": status},
            level="error" if status == "failed" else "info",
        )
        session.commit()
    notify_job_ended(recorder.job_id)
    return True


def _hand_back(recorder: JobRecorder) -> None:
    """Graceful shutdown: return the job to the queue (fenced) and wake another worker to resume it."""
    with get_sessionmaker()() as session:
        if not recorder.fenced_update(session, status="queued", worker_id=None, enqueued_at=utcnow()):
            session.rollback()
            return
        add_event(
            session,
            recorder.job_id,
            "status",
            "its worker is shutting down; the job was handed back to resume from its checkpoint",
            {"status": "queued", "reason": "worker_shutdown", "attempt": recorder.attempt},
            level="warning",
        )
        session.commit()
    enqueue_job(recorder.job_id)


def _record_salvage(recorder: JobRecorder, salvage_dir: Path, storage: LocalStorage) -> None:
    """A cancelled job keeps the student weights its child salvaged from the last checkpoint."""
    with get_sessionmaker()() as session:
        row = session.get(Job, recorder.job_id)
        if row is None or row.status != "cancelled" or row.attempt != recorder.attempt:
            return
        record_artifacts(session, recorder.job_id, salvage_dir, storage)
        add_event(
            session,
            recorder.job_id,
            "artifact",
            "the last checkpoint's student weights were kept as checkpoint_student.safetensors",
            {"artifact": "checkpoint_student.safetensors"},
        )
        session.commit()


def _deadline(job: Job) -> float | None:
    """The monotonic time at which the job's max_runtime_s (counted from its first start) runs out."""
    limit = getattr(job, "max_runtime_s", None)
    if not limit:
        return None
    spent = (utcnow() - job.started_at).total_seconds() if job.started_at else 0.0
    return time.monotonic() + max(0.0, limit - spent)


def run(job_id: str) -> None:
    """Run one job end to end in its sandboxed child, if this delivery wins the claim."""
    if HANDOFF.is_set():
        # A stopping worker takes no new job: pass the message on (acking it here would lose it).
        enqueue_job(job_id)
        return
    job = claim(job_id)
    if job is None:
        logger.info("job %s is not queued; this delivery is a no-op", job_id)
        return
    logger.info("job %s claimed, attempt %d", job_id, job.attempt)
    settings = get_settings()
    storage = LocalStorage.from_settings(settings)
    recorder = JobRecorder(job_id, job.attempt, deadline=_deadline(job))
    stop = threading.Event()
    threading.Thread(target=_heartbeat, args=(recorder, stop), daemon=True).start()
    try:
        staged, problem = _stage(job, storage)
        if problem:
            finish(recorder, "failed", error=problem)
            return
        gpu = host_has_gpu() and not str(job.hyperparameters.get("device") or "").startswith("cpu")
        limits = job_limits(_wall_s(job, settings), settings.job_memory_bytes, gpu)
        supervisor = Supervisor(
            staged,
            limits,
            emit=recorder,
            stop_reason=lambda: _child_stop_reason(recorder),
            grace_s=settings.stuck_job_grace_s,
        )
        outcome = supervisor.run()
        _record_outcome(job, recorder, outcome, staged, storage)
    except Exception:
        logger.exception("job %s: the worker failed while supervising it", job_id)
        finish(
            recorder,
            "failed",
            error={
                "code": "internal",
                "message": "the worker failed unexpectedly; the operator's logs have the details",
            },
        )
    finally:
        stop.set()


def _wall_s(job: Job, settings) -> float:
    """The child's wall clock: the job's time limit, or what is left of its max_runtime_s plus the grace."""
    wall = float(settings.job_time_limit_s)
    if recorder_deadline := _deadline(job):
        wall = min(wall, max(0.0, recorder_deadline - time.monotonic()) + settings.stuck_job_grace_s + 30)
    return wall


def _record_outcome(job: Job, recorder: JobRecorder, outcome: Outcome, staged, storage: LocalStorage) -> None:
    """Record how the child ended: succeeded, failed, handed back, cancelled (with its salvage) or timed out."""
    grace = get_settings().stuck_job_grace_s
    stuck = (
        f"its model code did not return within {grace:g} s of being asked to stop "
        "(DISTILLERY_STUCK_JOB_GRACE_S), so its process was ended"
    )
    if outcome.report is not None:
        report = {**outcome.report, "job_id": job.id}

        def results(session) -> dict:
            # Artifacts and the final status commit together, fenced: a stale attempt records nothing.
            record_artifacts(session, job.id, staged.out_dir, storage)
            history = report.get("history") or [{}]
            last = history[-1] if isinstance(history, list) and history and isinstance(history[-1], dict) else {}
            metrics = {k: last.get(k) for k in ("train_loss", "validation_accuracy", "validation_agreement")}
            # The row holds the last progress the recorder wrote; the claim-time copy in `job` is stale.
            latest = session.get(Job, job.id)
            progress = {**((latest.progress if latest else None) or {}), "fraction": 1.0}
            return {"report": report, "metrics": metrics, "progress": progress}

        if not finish(recorder, "succeeded", with_session=results):
            logger.info("job %s finished but is no longer ours; results dropped", job.id)
        return
    reason = recorder.stop_reason
    if reason == "shutdown":
        _hand_back(recorder)
    elif reason == "timeout":
        limit = getattr(job, "max_runtime_s", None)
        message = f"the job ran past its max_runtime_s of {limit} s"
        message += f"; {stuck}" if outcome.stuck else "; its last checkpoint is kept for a retry"
        finish(recorder, "failed", error={"code": "timeout", "message": message})
    elif reason == "lost":
        logger.info("job %s stopped: cancelled or no longer ours", job.id)
        if outcome.stuck:
            with get_sessionmaker()() as session:
                add_event(
                    session,
                    job.id,
                    "status",
                    f"the job was cancelled, and {stuck}",
                    {"reason": "stuck"},
                    level="warning",
                )
                session.commit()
        if outcome.salvaged:
            _record_salvage(recorder, staged.salvage_dir, storage)
    elif outcome.error is not None:
        finish(recorder, "failed", error=outcome.error)
    else:
        finish(
            recorder,
            "failed",
            error=outcome.crash or {"code": "sandbox_crash", "message": "the job ended without an answer"},
        )
