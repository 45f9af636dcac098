"""The worker's Celery app: the same configuration as the API's client, plus the tasks and a heartbeat.

Resource classes (worker/resources.py): the worker advertises its GPUs in its heartbeat and consumes the job
queues of its class (`--queues jobs` stands for them all).

Long GPU jobs: acks are late and prefetch is one (app/queue.py), the pool is solo so CUDA is initialised
in the process that trains, and one worker serves one GPU (pin it with CUDA_VISIBLE_DEVICES). A job's
Celery hard time limit is DISTILLERY_JOB_TIME_LIMIT_S; Redis's visibility timeout
(DISTILLERY_BROKER_VISIBILITY_TIMEOUT_S) is set longer so that a running job's message is not handed to a
second worker while the first still holds it; if it ever is, the claim on the job row makes it a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from celery.signals import celeryd_after_setup, worker_ready, worker_shutdown, worker_shutting_down
from sqlalchemy import delete

from app.db import get_sessionmaker
from app.models import WorkerHeartbeat, utcnow
from app.queue import make_celery
from app.settings import get_settings
from worker import logcontext
from worker.resources import job_queue_changes, visible_gpu_count, worker_gpus

logger = logging.getLogger(__name__)

celery = make_celery(get_settings())
celery.conf.include = ["worker.tasks"]
logcontext.install(celery)  # log lines carry job_id

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"
_stop = threading.Event()
# Set when the worker is asked to stop (SIGTERM): the running job checkpoints and is handed back.
HANDOFF = threading.Event()


def beat_once(queues: str = "", gpus: int | None = None) -> None:
    """Record that this worker is alive (read by /readyz), the queues it consumes and the GPUs it advertises."""
    with get_sessionmaker()() as session:
        row = session.get(WorkerHeartbeat, WORKER_ID)
        if row is None:
            row = WorkerHeartbeat(id=WORKER_ID, queues=queues, gpus=gpus, started_at=utcnow(), heartbeat_at=utcnow())
            session.add(row)
        else:
            row.heartbeat_at = utcnow()
        session.commit()


def _heartbeat_loop(queues: str, gpus: int) -> None:
    interval = get_settings().worker_heartbeat_interval_s
    while not _stop.is_set():
        try:
            beat_once(queues, gpus)
        except Exception:  # a database blip must not kill the worker
            logger.exception("worker heartbeat failed")
        _stop.wait(interval)


@celeryd_after_setup.connect
def _consume_class_queues(sender=None, instance=None, **_kwargs) -> None:
    # After -Q is applied: `jobs` becomes the job queues of this worker's class, and queues of jobs that need more
    # GPUs than it has are dropped, so that such a job never reaches it.
    queues = instance.app.amqp.queues
    gpus = worker_gpus()
    add, drop = job_queue_changes(list(queues.consume_from), gpus)
    for name in add:
        queues.select_add(name)
    if drop:
        logger.error("this worker advertises %d GPUs: not consuming %s (its jobs need more)", gpus, ", ".join(drop))
        queues.deselect(drop)
    visible = visible_gpu_count()
    if gpus > visible:
        logger.warning("DISTILLERY_WORKER_GPUS=%d but %d GPUs are visible: its GPU jobs run on the CPU", gpus, visible)
    logger.info("worker advertises %d GPUs; consuming %s", gpus, ", ".join(queues.consume_from))


@worker_ready.connect
def _start_heartbeat(sender=None, **_kwargs) -> None:
    queues = ",".join(q.name for q in sender.app.amqp.queues.consume_from.values()) if sender else ""
    args = (queues, worker_gpus())
    threading.Thread(target=_heartbeat_loop, args=args, name="heartbeat", daemon=True).start()
    from worker.reaper import run_forever

    threading.Thread(target=run_forever, args=(_stop,), name="reaper", daemon=True).start()
    logger.info("worker %s ready", WORKER_ID)


@worker_shutting_down.connect
def _hand_back(**_kwargs) -> None:
    # Runs in the signal handler: only set a flag; the job's should_stop() sees it within a step.
    HANDOFF.set()


@worker_shutdown.connect
def _stop_heartbeat(**_kwargs) -> None:
    _stop.set()
    try:
        with get_sessionmaker()() as session:
            session.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.id == WORKER_ID))
            session.commit()
    except Exception:
        logger.exception("could not remove the worker heartbeat")
