"""Resource classes: what a job asks for (`resources.gpus`), the queue it waits in, the workers that serve it.

    gpus absent  class "any"   queue jobs        any worker that serves jobs (a GPU worker gives it 1 GPU)
    gpus 0       class "cpu"   queue jobs.cpu    workers without a GPU, and GPU workers told to take CPU jobs
    gpus 1       class "gpu"   queue jobs.gpu    workers with at least one GPU
    gpus N >= 2  class "gpuN"  queue jobs.gpuN   workers with at least N GPUs

A worker with N GPUs consumes the queues of every class it can serve whole, so a job asking for more GPUs than a
worker has never reaches it (no message bounces between workers that cannot take it).
"""

from __future__ import annotations

JOBS_QUEUE = "jobs"
MAX_GPUS = 16  # more than one machine holds: a job asking for more could never run
ANY_CLASS = "any"
CPU_CLASS = "cpu"
GPU_CLASS = "gpu"
# The classes /metrics always reports, even when empty, so that an autoscaler's query never comes back empty.
BASE_CLASSES = (ANY_CLASS, CPU_CLASS, GPU_CLASS)


def resource_class(gpus: int | None) -> str:
    """The class of a job asking for `gpus` (None: any worker)."""
    if gpus is None:
        return ANY_CLASS
    if gpus == 0:
        return CPU_CLASS
    return GPU_CLASS if gpus == 1 else f"{GPU_CLASS}{gpus}"


def class_queue(name: str) -> str:
    """The queue of a resource class."""
    return JOBS_QUEUE if name == ANY_CLASS else f"{JOBS_QUEUE}.{name}"


def job_queue(gpus: int | None) -> str:
    """The queue a job asking for `gpus` waits in."""
    return class_queue(resource_class(gpus))


def worker_classes(worker_gpus: int) -> list[str]:
    """The classes a worker with `worker_gpus` GPUs serves by default: any, and cpu or every GPU count it holds."""
    if worker_gpus <= 0:
        return [ANY_CLASS, CPU_CLASS]
    return [ANY_CLASS, *(resource_class(n) for n in range(1, min(worker_gpus, MAX_GPUS) + 1))]


def queue_gpus(queue: str) -> int | None:
    """The GPUs a job in this job queue asks for: None for `jobs` and for a queue that is not a job queue."""
    if not queue.startswith(JOBS_QUEUE + "."):
        return None
    name = queue[len(JOBS_QUEUE) + 1 :]
    if name == CPU_CLASS:
        return 0
    if name == GPU_CLASS:
        return 1
    count = name[len(GPU_CLASS) :]
    return int(count) if name.startswith(GPU_CLASS) and count.isdigit() and int(count) >= 2 else None


def is_job_queue(queue: str) -> bool:
    """Whether a queue holds jobs (of any class)."""
    return queue == JOBS_QUEUE or queue_gpus(queue) is not None


def gpus_given(job_gpus: int | None, worker_gpus: int) -> int:
    """The GPUs a worker with `worker_gpus` gives a job: what it asked for; an unclassed job gets one if any."""
    if job_gpus is None:
        return min(1, worker_gpus)
    return job_gpus
