"""This worker's resource class: the GPUs it advertises, the job queues it consumes, the GPUs a job gets.

The supervisor never initialises CUDA (CUDA does not survive fork, and the job child is the one that trains): the
GPUs are counted from the NVIDIA device nodes, narrowed by CUDA_VISIBLE_DEVICES, or declared with
DISTILLERY_WORKER_GPUS. A job asking for more GPUs than a worker advertises never runs on it: the worker does not
consume that class's queue, and a message that reaches it anyway is sent on to its class's queue unclaimed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from app.db import get_sessionmaker
from app.models import Job
from app.settings import get_settings
from contract.resources import JOBS_QUEUE, class_queue, gpus_given, queue_gpus, worker_classes

logger = logging.getLogger(__name__)


def visible_gpu_count(dev: Path = Path("/dev"), environ: Mapping[str, str] = os.environ) -> int:
    """The GPUs this process could use, counted without CUDA: device nodes, narrowed by CUDA_VISIBLE_DEVICES."""
    nodes = sum(1 for node in dev.glob("nvidia*") if node.name[len("nvidia") :].isdigit())
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return nodes
    entries = 0
    for entry in visible.split(","):
        if not entry.strip() or entry.strip().startswith("-"):
            break  # CUDA ignores everything from the first invalid entry on
        entries += 1
    return min(entries, nodes)


def worker_gpus() -> int:
    """The GPUs this worker advertises: DISTILLERY_WORKER_GPUS when set, else the GPUs it can see."""
    declared = get_settings().worker_gpus
    return visible_gpu_count() if declared is None else declared


def job_queue_changes(consumed: list[str], gpus: int) -> tuple[list[str], list[str]]:
    """(queues to add, queues to drop) for a worker with `gpus` GPUs started on `consumed` (its --queues).

    `jobs` stands for every class the worker serves (contract.resources.worker_classes: a CPU worker adds jobs.cpu,
    a worker with N GPUs jobs.gpu .. jobs.gpuN); a queue of jobs that need more GPUs than it has is dropped. CPU
    jobs on a GPU worker only when its --queues names jobs.cpu: they then run with the GPUs hidden.
    """
    add = []
    if JOBS_QUEUE in consumed:
        add = [class_queue(name) for name in worker_classes(gpus) if class_queue(name) not in consumed]
    drop = [queue for queue in consumed if (queue_gpus(queue) or 0) > gpus]
    return add, drop


def can_run(job_gpus: int | None, gpus: int) -> bool:
    """Whether a worker with `gpus` GPUs may run a job asking for `job_gpus`: never one that needs more."""
    return (job_gpus or 0) <= gpus


def requested_gpus(job_id: str) -> int | None:
    """The job's resources.gpus (None: any worker, or no such job)."""
    with get_sessionmaker()() as session:
        job = session.get(Job, job_id)
        return job.gpus if job is not None else None


def gpus_for(job: Job, gpus: int) -> tuple[int, str | None]:
    """(the GPUs the job gets, a warning when this worker sees fewer than that).

    A worker told by DISTILLERY_WORKER_GPUS that it has GPUs it cannot see (a CPU machine serving the GPU class,
    as the tests do) still hands the job its class's count; the job child, finding fewer CUDA devices, trains on
    the CPU (one process, or its ranks over gloo) instead of failing in CUDA, and the job's events say so.
    """
    wanted = gpus_given(job.gpus, gpus)
    visible = visible_gpu_count()
    if wanted <= visible:
        return wanted, None
    return wanted, (
        f"this worker advertises {gpus} GPU{'s' if gpus != 1 else ''} (DISTILLERY_WORKER_GPUS) but sees {visible}: "
        f"the job, given {wanted}, trains on the CPU"
    )
