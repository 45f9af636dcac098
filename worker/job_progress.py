"""A running job's progress: the child's events become lifecycle writes, and the row says when to stop."""

from __future__ import annotations

import logging
import threading
import time

from app.lifecycle import Lease, Ownership, heartbeat, ownership, record_progress
from app.settings import get_settings
from worker.celery_app import HANDOFF
from worker.lm_metrics import LM_METRIC_KEYS

logger = logging.getLogger(__name__)

METRIC_KEYS = ("train_loss", "validation_accuracy", "validation_agreement")
ROW_CHECK_S = 0.5  # the row is read at most twice a second


class JobRecorder:
    """Writes a running job's progress, metrics and events through its lease, throttled; says when to stop."""

    def __init__(self, lease: Lease, deadline: float | None = None):
        self.lease = lease
        self.interval = get_settings().progress_interval_s
        self.last_progress = 0.0
        self.last_check = 0.0
        self.lost = False
        self.deadline = deadline  # time.monotonic() past which the job fails with `timeout`
        self.stop_reason: str | None = None  # lost | shutdown | timeout
        self.pending_progress: dict | None = None

    def __call__(self, event) -> None:
        """The child's events, one by one (worker/supervisor.py's ChildEvent)."""
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
            values["metrics"] = {k: event.data.get(k) for k in (*METRIC_KEYS, *LM_METRIC_KEYS)}
            if self.pending_progress is not None:  # epoch ends always carry the latest progress
                values["progress"], self.pending_progress = self.pending_progress, None
        level = "warning" if event.type == "warning" else "info"
        type_ = "resume" if event.data.get("resumed") else event.type
        if not record_progress(self.lease, type_, event.message, event.data, level, **values):
            self.lost = True

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
        elif time.monotonic() - self.last_check >= ROW_CHECK_S:
            self.last_check = time.monotonic()
            if ownership(self.lease) is not Ownership.OWNED:
                self.lost, self.stop_reason = True, "lost"
        return self.stop_reason is not None

    def child_stop_reason(self) -> str | None:
        """What the child's stop file says: cancel (salvage the student), lost, shutdown or timeout; None: go on."""
        if not self.should_stop():
            return None
        if self.stop_reason == "lost" and ownership(self.lease) is Ownership.CANCELLED:
            return "cancel"
        return self.stop_reason


def keep_lease(recorder: JobRecorder, stop: threading.Event) -> None:
    """Renew the job's lease every heartbeat interval until `stop`; a refused renewal marks the job lost."""
    interval = get_settings().worker_heartbeat_interval_s
    while not stop.wait(interval):
        try:
            if not recorder.lost and not heartbeat(recorder.lease):
                recorder.lost = True  # cancelled or reassigned: the child is asked to stop
        except Exception:  # a database blip must not end the job; the next beat retries
            logger.exception("job heartbeat failed")
