"""Every log record a worker writes carries `job_id` (`-` outside a job), so a job's lines can be grepped.

A context variable holds the current job; a log record factory copies it onto every record (whatever logger
or library wrote it), and the worker's log formats print it. Tasks wrap their work in `job_context(job_id)`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar

job_id_var: ContextVar[str] = ContextVar("job_id", default="-")

LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] job_id=%(job_id)s %(name)s: %(message)s"
_installed = False


@contextlib.contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Log records made inside carry this job_id."""
    token = job_id_var.set(job_id)
    try:
        yield
    finally:
        job_id_var.reset(token)


def install(celery=None) -> None:
    """Add `job_id` to every log record of this process, and to the Celery worker's log formats."""
    global _installed
    if not _installed:
        previous = logging.getLogRecordFactory()

        def factory(*args, **kwargs) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            record.job_id = job_id_var.get()
            return record

        logging.setLogRecordFactory(factory)
        _installed = True
    if celery is not None:
        celery.conf.worker_log_format = LOG_FORMAT
        celery.conf.worker_task_log_format = LOG_FORMAT
