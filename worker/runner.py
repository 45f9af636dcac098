"""The job's supervisor in the worker: claim it, stage its folder, run its sandboxed child, record how it ended.

The worker never opens an upload: the child does everything that reads one (DESIGN.md, Trust boundary). Every
state change goes through the lifecycle (app/lifecycle/), fenced by this attempt's lease: a worker that lost the
job (cancelled, or requeued to another attempt) cannot overwrite what the newer owner wrote.
"""

from __future__ import annotations

import logging
import threading
import time

from app import queue
from app.lifecycle import Lease, claim, finish, hand_back, record_after_cancel
from app.models import Job, utcnow
from app.settings import get_settings
from app.storage import LocalStorage
from app.stores import open_storage
from worker import cache_sync, checkpoint_sync
from worker.celery_app import HANDOFF, WORKER_ID
from worker.job_artifacts import record_artifacts
from worker.job_progress import METRIC_KEYS, JobRecorder, keep_lease
from worker.job_staging import stage_job
from worker.lm_metrics import CAUSAL_LM, lm_metrics
from worker.resources import can_run, gpus_for, requested_gpus, worker_gpus
from worker.supervisor import ChildEvent, Outcome, StagedJob, Supervisor, host_has_gpu, job_limits

logger = logging.getLogger(__name__)

INTERNAL_ERROR = {"code": "internal", "message": "the worker failed unexpectedly; the operator's logs have the details"}


def _deadline(job: Job) -> float | None:
    """The monotonic time at which the job's max_runtime_s (counted from its first start) runs out."""
    limit = getattr(job, "max_runtime_s", None)
    if not limit:
        return None
    spent = (utcnow() - job.started_at).total_seconds() if job.started_at else 0.0
    return time.monotonic() + max(0.0, limit - spent)


def _wall_s(job: Job, settings) -> float:
    """The child's wall clock: the job's time limit, or what is left of its max_runtime_s plus the grace."""
    wall = float(settings.job_time_limit_s)
    if deadline := _deadline(job):
        wall = min(wall, max(0.0, deadline - time.monotonic()) + settings.stuck_job_grace_s + 30)
    return wall


def run(job_id: str) -> None:
    """Run one job end to end in its sandboxed child, if this delivery wins the claim."""
    wanted = requested_gpus(job_id)
    if HANDOFF.is_set():
        # A stopping worker takes no new job: pass the message on (acking it here would lose it).
        queue.enqueue_job(job_id, wanted)
        return
    if not can_run(wanted, worker_gpus()):
        # Only a stray message gets here (this worker does not consume that class's queue): send it where it belongs.
        logger.warning("job %s needs %s GPUs, more than this worker has; sent to its class's queue", job_id, wanted)
        queue.enqueue_job(job_id, wanted)
        return
    job = claim(job_id, WORKER_ID)
    if job is None:
        logger.info("job %s is not queued; this delivery is a no-op", job_id)
        return
    recorder = JobRecorder(Lease(job_id, job.attempt), deadline=_deadline(job))
    stop = threading.Event()
    threading.Thread(target=keep_lease, args=(recorder, stop), name="job-lease", daemon=True).start()
    try:
        _supervise(job, recorder)
    except Exception:
        logger.exception("job %s: the worker failed while supervising it", job_id)
        finish(recorder.lease, "failed", error=INTERNAL_ERROR)
    finally:
        stop.set()


def _supervise(job: Job, recorder: JobRecorder) -> None:
    """Stage the job's folder, run its child under the Supervisor, and record the outcome."""
    settings = get_settings()
    storage = open_storage(settings)
    checkpoint_sync.pull(storage, job.tenant_id, job.id)  # an attempt on another machine left its checkpoint there
    gpus, shortfall = gpus_for(job, worker_gpus())
    if shortfall:
        logger.warning("job %s: %s", job.id, shortfall)
        recorder(ChildEvent("warning", shortfall, {"gpus": gpus}))  # fenced by the lease, like the child's events
    staged, problem = stage_job(job, storage, gpus)
    if problem:
        finish(recorder.lease, "failed", error=problem)
        return
    cache = staged.writable_dirs[0]  # the tenant's cache folder of this teacher
    cache_sync.pull(storage, cache)  # what jobs on other machines computed
    # The child sees the GPUs only when the job gets some: a CPU job on a GPU worker trains with them hidden.
    gpu = gpus > 0 and host_has_gpu() and not str(job.hyperparameters.get("device") or "").startswith("cpu")
    supervisor = Supervisor(
        staged,
        job_limits(_wall_s(job, settings), settings.job_memory_bytes, gpu),
        emit=cache_sync.pushing_after_teacher_pass(
            checkpoint_sync.pushing_after_epochs(recorder, storage, job.tenant_id, job.id), storage, cache
        ),
        stop_reason=recorder.child_stop_reason,
        grace_s=settings.stuck_job_grace_s,
    )
    outcome = supervisor.run()
    cache_sync.safely_push(storage, cache)  # the augmented batches it computed, for later jobs anywhere
    _record_outcome(job, recorder, outcome, staged, storage)


def _stuck_message() -> str:
    grace = get_settings().stuck_job_grace_s
    return (
        f"its model code did not return within {grace:g} s of being asked to stop "
        "(DISTILLERY_STUCK_JOB_GRACE_S), so its process was ended"
    )


def _record_success(job: Job, recorder: JobRecorder, report: dict, staged: StagedJob, storage: LocalStorage) -> None:
    report = {**report, "job_id": job.id}

    def results(session) -> dict:
        # Artifacts and the final status commit together, fenced: a stale attempt records nothing.
        record_artifacts(session, job.id, staged.out_dir, storage)
        history = report.get("history") or [{}]
        last = history[-1] if isinstance(history, list) and history and isinstance(history[-1], dict) else {}
        # The row holds the last progress the recorder wrote; the claim-time copy in `job` is stale.
        latest = session.get(Job, job.id)
        progress = {**((latest.progress if latest else None) or {}), "fraction": 1.0}
        metrics = lm_metrics(report) if report.get("task") == CAUSAL_LM else {k: last.get(k) for k in METRIC_KEYS}
        return {"report": report, "metrics": metrics, "progress": progress}

    if not finish(recorder.lease, "succeeded", with_session=results):
        logger.info("job %s finished but is no longer ours; results dropped", job.id)


def _record_cancelled(job: Job, recorder: JobRecorder, outcome: Outcome, staged, storage: LocalStorage) -> None:
    """The job stopped because it is no longer ours; if the user cancelled it, keep what its child salvaged."""
    logger.info("job %s stopped: cancelled or no longer ours", job.id)
    if outcome.stuck:
        message = f"the job was cancelled, and {_stuck_message()}"
        record_after_cancel(recorder.lease, "warning", message, {"reason": "stuck"}, level="warning")
    if outcome.salvaged:
        record_after_cancel(
            recorder.lease,
            "artifact",
            "the last checkpoint's student weights were kept as checkpoint_student.safetensors",
            {"artifact": "checkpoint_student.safetensors"},
            with_session=lambda session: record_artifacts(session, job.id, staged.salvage_dir, storage),
        )


def _record_outcome(job: Job, recorder: JobRecorder, outcome: Outcome, staged, storage: LocalStorage) -> None:
    """Record how the child ended: succeeded, failed, handed back, cancelled (with its salvage) or timed out."""
    if outcome.report is not None:
        _record_success(job, recorder, outcome.report, staged, storage)
        return
    reason = recorder.stop_reason
    if reason == "shutdown":
        hand_back(recorder.lease)
    elif reason == "timeout":
        message = f"the job ran past its max_runtime_s of {getattr(job, 'max_runtime_s', None)} s"
        message += f"; {_stuck_message()}" if outcome.stuck else "; its last checkpoint is kept for a retry"
        finish(recorder.lease, "failed", error={"code": "timeout", "message": message})
    elif reason == "lost":
        _record_cancelled(job, recorder, outcome, staged, storage)
    elif outcome.error is not None:
        finish(recorder.lease, "failed", error=outcome.error)
    else:
        crash = outcome.crash or {"code": "sandbox_crash", "message": "the job ended without an answer"}
        finish(recorder.lease, "failed", error=crash)
