"""GET /metrics for Prometheus, computed from the database at scrape time.

Every number comes from the database, not from counters in this process, so any API process answers the
same and several API processes behind a load balancer agree:

- distillery_jobs{status}                        gauge: jobs in each status
- distillery_job_queue_wait_seconds              histogram: started_at - created_at of jobs that started
- distillery_job_run_seconds{status}             histogram: finished_at - started_at of ended jobs
- distillery_uploads{kind,status}                gauge: uploaded models and datasets
- distillery_upload_bytes{kind}                  gauge: bytes of the uploads stored now (deleted ones drop
                                                 out, so this is a gauge, not a counter)
- distillery_workers_fresh                       gauge: workers whose heartbeat is newer than the timeout
- distillery_worker_last_heartbeat_age_seconds{worker,queues}  gauge, per worker row
- distillery_worker_heartbeat_age_seconds        gauge: age of the newest heartbeat (+Inf when none)
- distillery_queue_depth{class}                  gauge: queued jobs by resource class (any, cpu, gpu, gpu2, ...;
                                                 contract.resources), the number an autoscaler scales a pool on
- distillery_queue_oldest_age_seconds{class}     gauge: seconds since the oldest queued job of the class was
                                                 created (0 when none waits)
- distillery_running_jobs{class}                 gauge: running jobs by resource class (an autoscaler adds them to
                                                 the depth, so that it never scales in a worker that is training)
- distillery_workers_by_class{class}             gauge: live job workers by the class their GPUs give them (cpu, gpu,
                                                 gpu2, ...)

/metrics needs no API key (Prometheus scrapes it); it shows no tenant's data, only totals. Keep it on a
private network or behind the proxy's access rules like /readyz.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from sqlalchemy import func, select

from app.db import get_sessionmaker
from app.models import Dataset, Job, Model, WorkerHeartbeat, utcnow
from app.settings import get_settings
from contract import JOB_STATUSES, TERMINAL, JobStatus
from contract.resources import BASE_CLASSES, is_job_queue, resource_class

router = APIRouter(tags=["operations"])

QUEUE_WAIT_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
RUN_BUCKETS = (1, 5, 10, 30, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 24 * 3600)


def _histogram(
    name: str, doc: str, samples: dict[tuple[str, ...], list[float]], buckets: tuple, labels: list[str]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for label_values, values in samples.items():
        cumulative = [(str(b), sum(1 for v in values if v <= b)) for b in buckets]
        cumulative.append(("+Inf", len(values)))
        family.add_metric(list(label_values), cumulative, sum_value=sum(values))
    return family


class DatabaseCollector:
    """A Prometheus collector that reads the service's state from the database on each scrape."""

    def collect(self):
        settings = get_settings()
        now = utcnow()
        with get_sessionmaker()() as session:
            by_status = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            timings = session.execute(
                select(Job.status, Job.created_at, Job.started_at, Job.finished_at).where(Job.started_at.is_not(None))
            ).all()
            uploads = {
                kind: session.execute(
                    select(cls.status, func.count(), func.coalesce(func.sum(cls.size_bytes), 0)).group_by(cls.status)
                ).all()
                for kind, cls in (("model", Model), ("dataset", Dataset))
            }
            workers = session.execute(
                select(WorkerHeartbeat.id, WorkerHeartbeat.queues, WorkerHeartbeat.heartbeat_at)
            ).all()
            active = session.execute(
                select(Job.status, Job.gpus, func.count(), func.min(Job.created_at))
                .where(Job.status.in_((JobStatus.QUEUED.value, JobStatus.RUNNING.value)))
                .group_by(Job.status, Job.gpus)
            ).all()
            live_gpus = session.execute(
                select(WorkerHeartbeat.queues, WorkerHeartbeat.gpus).where(
                    WorkerHeartbeat.heartbeat_at >= now - timedelta(seconds=settings.worker_heartbeat_timeout_s)
                )
            ).all()

        jobs = GaugeMetricFamily("distillery_jobs", "Jobs by status.", labels=["status"])
        for status in sorted(set(JOB_STATUSES) | set(by_status)):
            jobs.add_metric([status], by_status.get(status, 0))
        yield jobs
        yield from _job_timings(timings)
        yield from _upload_gauges(uploads)
        yield from _worker_gauges(workers, now, now - timedelta(seconds=settings.worker_heartbeat_timeout_s))
        yield from _queue_gauges(active, now)
        yield _class_workers(live_gpus)


def _job_timings(timings):
    """Queue-wait and run-time histograms from (status, created, started, finished) rows."""
    waits: dict[tuple[str, ...], list[float]] = {(): []}
    runs: dict[tuple[str, ...], list[float]] = {(s,): [] for s in TERMINAL}
    for status, created_at, started_at, finished_at in timings:
        waits[()].append(max(0.0, (started_at - created_at).total_seconds()))
        if finished_at is not None and status in TERMINAL:
            runs[(status,)].append(max(0.0, (finished_at - started_at).total_seconds()))
    yield _histogram(
        "distillery_job_queue_wait_seconds",
        "Seconds from a job's creation to its first start.",
        waits,
        QUEUE_WAIT_BUCKETS,
        [],
    )
    yield _histogram(
        "distillery_job_run_seconds",
        "Seconds from a job's first start to its end, by outcome.",
        runs,
        RUN_BUCKETS,
        ["status"],
    )


def _upload_gauges(uploads):
    """Upload counts by kind and status, and the bytes stored by kind."""
    counts = GaugeMetricFamily(
        "distillery_uploads", "Uploaded models and datasets by status.", labels=["kind", "status"]
    )
    sizes = GaugeMetricFamily("distillery_upload_bytes", "Bytes of uploads stored now.", labels=["kind"])
    for kind, rows in uploads.items():
        for status, count, _size in rows:
            counts.add_metric([kind, status], count)
        sizes.add_metric([kind], sum(int(size) for _status, _count, size in rows))
    yield counts
    yield sizes


def _worker_gauges(workers, now, cutoff):
    """Each worker's heartbeat age, how many are fresh, and the newest heartbeat's age."""
    ages = GaugeMetricFamily(
        "distillery_worker_last_heartbeat_age_seconds",
        "Seconds since each worker's last heartbeat.",
        labels=["worker", "queues"],
    )
    for worker_id, queues, beat in workers:
        ages.add_metric([worker_id, queues or ""], max(0.0, (now - beat).total_seconds()))
    fresh = sum(1 for _w, _q, beat in workers if beat >= cutoff)
    yield GaugeMetricFamily("distillery_workers_fresh", "Workers with a fresh heartbeat.", value=fresh)
    yield ages
    newest = max((beat for _w, _q, beat in workers), default=None)
    yield GaugeMetricFamily(
        "distillery_worker_heartbeat_age_seconds",
        "Seconds since the newest heartbeat of any worker (+Inf when there is none).",
        value=(now - newest).total_seconds() if newest else math.inf,
    )


def _queue_gauges(active: Sequence[Any], now: datetime) -> Iterator[GaugeMetricFamily]:
    """Queue depth, the oldest queued job's age and running jobs by resource class, from (status, gpus, count,
    oldest created) rows. The job rows, not the broker, are counted: exact, and the same for every broker."""
    depth: dict[str, float] = dict.fromkeys(BASE_CLASSES, 0)
    running: dict[str, float] = dict.fromkeys(BASE_CLASSES, 0)
    oldest: dict[str, float] = dict.fromkeys(BASE_CLASSES, 0.0)
    for status, gpus, count, created_at in active:
        name = resource_class(gpus)
        if status == JobStatus.RUNNING.value:
            running[name] = running.get(name, 0) + count
            continue
        depth[name] = depth.get(name, 0) + count
        oldest[name] = max(oldest.get(name, 0.0), (now - created_at).total_seconds())
    families = (
        GaugeMetricFamily("distillery_queue_depth", "Queued jobs by resource class.", labels=["class"]),
        GaugeMetricFamily(
            "distillery_queue_oldest_age_seconds",
            "Seconds since the oldest queued job of each resource class was created (0 when none waits).",
            labels=["class"],
        ),
        GaugeMetricFamily("distillery_running_jobs", "Running jobs by resource class.", labels=["class"]),
    )
    for family, values in zip(families, (depth, oldest, running), strict=True):
        for name in sorted(set(depth) | set(running)):
            family.add_metric([name], max(0.0, values.get(name, 0)))
        yield family


def _class_workers(live_gpus: Sequence[Any]) -> GaugeMetricFamily:
    """Live job workers by the class their GPUs give them (cpu, gpu, gpu2, ...); uploads-only workers are left out."""
    workers: dict[str, int] = {}
    for queues, gpus in live_gpus:
        if not any(is_job_queue(q) for q in (queues or "").split(",")):
            continue
        name = resource_class(gpus or 0)
        workers[name] = workers.get(name, 0) + 1
    family = GaugeMetricFamily(
        "distillery_workers_by_class", "Live job workers by the resource class their GPUs give them.", labels=["class"]
    )
    for name in sorted(workers):
        family.add_metric([name], workers[name])
    return family


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics",
    operation_id="metrics_get",
    responses={
        200: {
            "description": "Prometheus text exposition format",
            "content": {CONTENT_TYPE_LATEST: {"example": 'distillery_jobs{status="queued"} 3.0'}},
        }
    },
)
def metrics() -> Response:
    """Jobs by status, queue wait and run time histograms, uploads, worker heartbeats (from the database)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector())
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
