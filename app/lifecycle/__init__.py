"""The job lifecycle: the one place that changes a job's state and writes its events.

    queued --claim--> running --finish--> succeeded | failed | cancelled
       ^                 |  \\--hand_back (worker shutdown)--> queued      (attempt rises at the next claim)
       |                 \\----fail_or_requeue_lost (reaper)--> queued, or failed once max_attempts workers died
       \\--cancel_job (API) from queued or running--> cancelled

The API (create, cancel), the worker (claim, heartbeat, progress, finish, hand back) and the reaper (lost jobs,
re-sent messages) all call this package; no other module writes Job.status, the lease and attempt columns or a
JobEvent row (tests/test_lifecycle.py checks the source). Every write by a worker is fenced by its Lease, so a
worker that lost the job cannot overwrite what the job's newer owner wrote.

    creation   create_job, request_hash
    leases     Lease, claim, heartbeat, record_progress, ownership (fenced_update stays inside the package)
    endings    finish, hand_back, cancel_job, record_after_cancel
    reaping    fail_or_requeue_lost, resend_queued
    job_events record_event, record_event_now (events that change no state)
    waiting    note_if_waiting, note_waiting_jobs: a queued job no live worker can serve says so, once
"""

from app.lifecycle.creation import create_job, request_hash
from app.lifecycle.endings import cancel_job, finish, hand_back, record_after_cancel
from app.lifecycle.job_events import record_event, record_event_now
from app.lifecycle.leases import Lease, Ownership, claim, heartbeat, ownership, record_progress
from app.lifecycle.reaping import fail_or_requeue_lost, resend_queued
from app.lifecycle.waiting import note_waiting_jobs

__all__ = [
    "Lease",
    "Ownership",
    "cancel_job",
    "claim",
    "create_job",
    "fail_or_requeue_lost",
    "finish",
    "hand_back",
    "heartbeat",
    "note_waiting_jobs",
    "ownership",
    "record_after_cancel",
    "record_event",
    "record_event_now",
    "record_progress",
    "request_hash",
    "resend_queued",
]
