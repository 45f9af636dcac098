"""A job's event log: the one place that writes JobEvent rows.

Status events go only with a state change (the other modules of this package); everything else that a job's
log records (a webhook attempt, a retention pass, a salvaged checkpoint) goes through `record_event`, which
refuses the `status` type so that a status event always means the row's status changed.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from app.db import get_sessionmaker
from app.models import JobEvent, utcnow

logger = logging.getLogger(__name__)

STATUS_EVENT = "status"


def add_event(
    session: Session, job_id: str, type_: str, message: str, data: dict | None = None, level: str = "info"
) -> None:
    """Append an event to a job's log (committed by the caller); for this package's transitions only."""
    session.add(JobEvent(job_id=job_id, type=type_, level=level, message=message, data=data, created_at=utcnow()))


def record_event(
    session: Session, job_id: str, type_: str, message: str, data: dict | None = None, level: str = "info"
) -> None:
    """Append an event that changes no state (webhook, retention, artifact...); committed by the caller."""
    if type_ == STATUS_EVENT:
        raise ValueError("status events go with a state change: use a lifecycle transition")
    add_event(session, job_id, type_, message, data, level)


def record_event_now(job_id: str, type_: str, message: str, data: dict | None = None, level: str = "info") -> None:
    """`record_event` in a session of its own, committed."""
    with get_sessionmaker()() as session:
        record_event(session, job_id, type_, message, data, level)
        session.commit()
