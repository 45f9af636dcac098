"""The job adapter: claim the row, call the engine with a progress callback, record what it produced.

Every write after the claim is fenced by (status = running, attempt = ours): a worker that lost the job
(cancelled, or requeued to another attempt) cannot overwrite what the newer owner wrote.
"""

from __future__ import annotations

import logging
import os
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
from worker.salvage import salvage_student
from worker.validate import dataset_spec_options

logger = logging.getLogger(__name__)

ARTIFACT_FORMATS = {".pt": "torchscript", ".pt2": "pt2", ".onnx": "onnx", ".safetensors": "safetensors",
                    ".json": "json", ".html": "html"}


class LostLease(Exception):
    """The job is no longer ours: cancelled, or handed to another attempt."""


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
        self.last_poll = time.monotonic()  # when the engine last asked should_stop(): it is not stuck in a model

    def fenced_update(self, session, **values) -> bool:
        """Update the job row only while this attempt still owns it."""
        result = session.execute(
            update(Job).where(Job.id == self.job_id, Job.attempt == self.attempt, Job.status == "running")
            .values(heartbeat_at=utcnow(), **values))
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
            values["metrics"] = {k: event.data.get(k) for k in ("train_loss", "eval_accuracy", "eval_agreement")}
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
        """Polled by the engine each step: lost lease or cancel, worker shutdown, or the runtime limit."""
        self.last_poll = time.monotonic()
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
            update(Job).where(Job.id == job_id, Job.status == "queued")
            .values(status="running", attempt=Job.attempt + 1, worker_id=WORKER_ID, phase="validating",
                    started_at=func.coalesce(Job.started_at, utcnow()), heartbeat_at=utcnow()))
        if result.rowcount != 1:
            session.rollback()
            return None
        job = session.get(Job, job_id)
        add_event(session, job_id, "status", f"job running on {WORKER_ID} (attempt {job.attempt})",
                  {"status": "running", "attempt": job.attempt, "worker": WORKER_ID})
        session.commit()
        return job


def _heartbeat(recorder: JobRecorder, stop: threading.Event) -> None:
    settings = get_settings()
    stop_asked_at: float | None = None
    while not stop.wait(settings.worker_heartbeat_interval_s):
        try:
            if not recorder.lost:
                with get_sessionmaker()() as session:
                    if recorder.fenced_update(session):
                        session.commit()
                    else:
                        recorder.lost = True  # cancelled or reassigned; the watch below goes on
            stop_asked_at = _watch_for_stuck_model(recorder, stop_asked_at, settings.stuck_job_grace_s)
        except Exception:
            logger.exception("job heartbeat failed")


EXIT_STUCK = 70  # EX_SOFTWARE: the supervisor restarts the worker


def _watch_for_stuck_model(recorder: JobRecorder, asked_at: float | None, grace: float) -> float | None:
    """Exit the process when a job asked to stop has not come back from the model's code within `grace` s.

    Returns when the stop was first seen (None: no stop asked). The engine polls should_stop() every step and
    the teacher sandbox twice a second; a job that does neither for `grace` seconds after a cancel or its
    runtime limit is inside a model call that does not return (TorchScript releases the GIL, so this thread
    still runs). A worker shutting down (SIGTERM) is not watched: its supervisor kills it after its own grace.
    """
    now = time.monotonic()
    timed_out = recorder.deadline is not None and now > recorder.deadline
    if not (recorder.lost or timed_out):
        return None
    asked_at = asked_at or now
    if recorder.last_poll >= asked_at or now - asked_at < grace:
        return asked_at
    why = "cancelled" if recorder.lost else "past its max_runtime_s"
    message = (
        f"the job was {why}, and its model code did not return within {grace:.0f} s "
        f"(DISTILLERY_STUCK_JOB_GRACE_S); worker {WORKER_ID} exits to end it"
    )
    logger.critical("job %s: %s", recorder.job_id, message)
    try:
        if recorder.lost:
            with get_sessionmaker()() as session:
                add_event(session, recorder.job_id, "status", message, {"reason": "stuck"}, level="warning")
                session.commit()
        else:
            finish(recorder, "failed", error={"code": "timeout", "message": message})
    finally:
        os._exit(EXIT_STUCK)


def _inputs(job: Job, storage: LocalStorage):
    """The engine's view of the job's files."""
    from worker.engine import DatasetSpec

    with get_sessionmaker()() as session:
        teacher = session.get(Model, job.teacher_id)
        train = session.get(Dataset, job.train_dataset_id)
        eval_ = session.get(Dataset, job.eval_dataset_id) if job.eval_dataset_id else None
        student_model = session.get(Model, job.student["model_id"]) if job.student.get("model_id") else None
    missing = [what for what, row in (("teacher", teacher), ("train dataset", train)) if row is None]
    if job.eval_dataset_id and eval_ is None:
        missing.append("eval dataset")
    if missing:
        return None, f"the job's {', '.join(missing)} was deleted"

    def spec(row: Dataset):
        return DatasetSpec(path=str(storage.path(row.path)), **dataset_spec_options(row, storage))

    student = ({"model_path": str(storage.path(student_model.path))} if student_model else dict(job.student))
    return (str(storage.path(teacher.path)), spec(train), spec(eval_) if eval_ else None, student), None


def record_artifacts(session, job_id: str, out_dir: Path, storage: LocalStorage) -> None:
    """One artifact row per file the engine wrote, with size and sha256."""
    for path in sorted(p for p in out_dir.iterdir() if p.is_file()):
        fmt = "int8-onnx" if path.name.endswith(".int8.onnx") else ARTIFACT_FORMATS.get(path.suffix, "file")
        session.add(Artifact(job_id=job_id, name=path.name, format=fmt, size_bytes=path.stat().st_size,
                             sha256=sha256_file(path), path=storage.relative(path)))


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
        add_event(session, recorder.job_id, "status", message, {"status": status},
                  level="error" if status == "failed" else "info")
        session.commit()
    notify_job_ended(recorder.job_id)
    return True


def _hand_back(recorder: JobRecorder) -> None:
    """Graceful shutdown: return the job to the queue (fenced) and wake another worker to resume it."""
    with get_sessionmaker()() as session:
        if not recorder.fenced_update(session, status="queued", worker_id=None, enqueued_at=utcnow()):
            session.rollback()
            return
        add_event(session, recorder.job_id, "status",
                  f"worker {WORKER_ID} is shutting down; job handed back to resume from its checkpoint",
                  {"status": "queued", "reason": "worker_shutdown", "attempt": recorder.attempt}, level="warning")
        session.commit()
    enqueue_job(recorder.job_id)


def _salvage_cancelled(recorder: JobRecorder, work: Path, out_dir: Path, student: dict,
                       storage: LocalStorage) -> None:
    """A cancelled job keeps its last good student weights as an artifact."""
    with get_sessionmaker()() as session:
        row = session.get(Job, recorder.job_id)
        if row is None or row.status != "cancelled" or row.attempt != recorder.attempt:
            return
    salvage_dir = out_dir.parent / "salvaged"
    if not salvage_student(work / "checkpoints", salvage_dir, student):
        return
    with get_sessionmaker()() as session:
        record_artifacts(session, recorder.job_id, salvage_dir, storage)
        add_event(session, recorder.job_id, "artifact", "the last checkpoint's student weights were kept as "
                  "checkpoint_student.safetensors", {"artifact": "checkpoint_student.safetensors"})
        session.commit()


def _is_cuda_oom(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "CUDA out of memory" in str(exc)


def _deadline(job: Job) -> float | None:
    """The monotonic time at which the job's max_runtime_s (counted from its first start) runs out."""
    limit = getattr(job, "max_runtime_s", None)
    if not limit:
        return None
    spent = (utcnow() - job.started_at).total_seconds() if job.started_at else 0.0
    return time.monotonic() + max(0.0, limit - spent)


def run(job_id: str) -> None:
    """Run one job end to end, if this delivery wins the claim."""
    from worker.engine import DistillConfig, EngineError, distill
    from worker.teacher_stage import sandboxed_teacher

    if HANDOFF.is_set():
        # A stopping worker takes no new job: pass the message on (acking it here would lose it).
        enqueue_job(job_id)
        return
    job = claim(job_id)
    if job is None:
        logger.info("job %s is not queued; this delivery is a no-op", job_id)
        return
    logger.info("job %s claimed, attempt %d", job_id, job.attempt)
    storage = LocalStorage.from_settings(get_settings())
    recorder = JobRecorder(job_id, job.attempt, deadline=_deadline(job))
    work = storage.job_dir(job.tenant_id, job_id)
    out_dir = work / f"attempt-{job.attempt}" / "artifacts"
    out_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    threading.Thread(target=_heartbeat, args=(recorder, stop), daemon=True).start()
    try:
        inputs, problem = _inputs(job, storage)
        if problem:
            finish(recorder, "failed", error={"code": "input_deleted", "message": problem})
            return
        teacher_path, train, eval_, student = inputs
        config = DistillConfig.from_dict({**job.hyperparameters, "student": student, "export": job.export,
                                          "baseline": job.baseline})
        # TorchScript and .pt2 teachers carry code: they are never opened in this process but run in the
        # sandbox child (worker.teacher_stage -> worker.sandbox.compute_teacher_outputs_sandboxed), which
        # the engine calls for the teacher's outputs when its cache misses; a sandbox failure (its code and
        # message) fails this job only, through the EngineError branch below.
        precomputed = sandboxed_teacher(
            teacher_path, train, config, work / f"attempt-{job.attempt}", recorder, recorder.should_stop
        )
        report = distill(teacher_path, train, eval_, config, str(out_dir), progress=recorder,
                         should_stop=recorder.should_stop, checkpoint_dir=str(work / "checkpoints"),
                         teacher_cache_dir=str(storage.cache_dir(job.tenant_id)), precomputed=precomputed)
        report["job_id"] = job_id

        def results(session) -> dict:
            # Artifacts and the final status commit together, fenced: a stale attempt records nothing.
            record_artifacts(session, job_id, out_dir, storage)
            history = report.get("history") or [{}]
            metrics = {k: history[-1].get(k) for k in ("train_loss", "eval_accuracy", "eval_agreement")}
            # The row holds the last progress the recorder wrote; the claim-time copy in `job` is stale.
            latest = session.get(Job, job_id)
            progress = {**((latest.progress if latest else None) or {}), "fraction": 1.0}
            return {"report": report, "metrics": metrics, "progress": progress}

        if not finish(recorder, "succeeded", with_session=results):
            logger.info("job %s finished but is no longer ours; results dropped", job_id)
    except EngineError as exc:
        if exc.code != "cancelled" and not recorder.stop_reason:
            finish(recorder, "failed", error={"code": exc.code, "message": exc.message})
        elif recorder.stop_reason == "shutdown":
            _hand_back(recorder)
        elif recorder.stop_reason == "timeout":
            limit = getattr(job, "max_runtime_s", None)
            finish(recorder, "failed", error={"code": "timeout", "message": f"the job ran past its max_runtime_s "
                                              f"of {limit} s; its last checkpoint is kept for a retry"})
        else:
            logger.info("job %s stopped: cancelled or no longer ours", job_id)
            _salvage_cancelled(recorder, work, out_dir, job.student, storage)
    except Exception as exc:
        if _is_cuda_oom(exc):
            batch = job.hyperparameters.get("batch_size")
            finish(recorder, "failed", error={"code": "cuda_oom", "message": f"the GPU ran out of memory; "
                                              f"retry with a smaller batch_size (this job used {batch})"})
        else:
            logger.exception("job %s crashed", job_id)
            finish(recorder, "failed", error={"code": "internal", "message": "the worker failed unexpectedly: "
                                              f"{type(exc).__name__}: {exc}"})
    finally:
        stop.set()
