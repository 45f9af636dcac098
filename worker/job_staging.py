"""Lay a job's folder out for its child from the job's rows; the uploads are bound in, never opened here."""

from __future__ import annotations

import logging

from app.db import get_sessionmaker
from app.models import Dataset, Job, Model
from app.settings import get_settings
from app.storage import LocalStorage
from worker.sandbox_policy import CODE_BEARING_FORMATS, code_bearing_refusal
from worker.supervisor import StagedJob, stage
from worker.validate import data_limits, dataset_spec_options

logger = logging.getLogger(__name__)


def _input_rows(job: Job) -> tuple:
    with get_sessionmaker()() as session:
        teacher = session.get(Model, job.teacher_id)
        train = session.get(Dataset, job.train_dataset_id)
        eval_ = session.get(Dataset, job.eval_dataset_id) if job.eval_dataset_id else None
        student = session.get(Model, job.student["model_id"]) if job.student.get("model_id") else None
    return teacher, train, eval_, student


def _problem(job: Job, teacher, train, eval_, student) -> dict | None:
    """{"code", "message"} when the job cannot run: an input was deleted, or code-bearing without a sandbox."""
    missing = [what for what, row in (("teacher", teacher), ("train dataset", train)) if row is None]
    if job.eval_dataset_id and eval_ is None:
        missing.append("eval dataset")
    if job.student.get("model_id") and student is None:
        missing.append("student model")
    if missing:
        return {"code": "input_deleted", "message": f"the job's {', '.join(missing)} was deleted"}
    for what, row in (("the teacher", teacher), ("the uploaded student", student)):
        if row is not None and (row.format in CODE_BEARING_FORMATS or what == "the uploaded student"):
            refusal = code_bearing_refusal(f"{what} ({row.format})")
            if refusal:
                return refusal
    return None


def stage_job(job: Job, storage: LocalStorage, gpus: int = 0) -> tuple[StagedJob | None, dict | None]:
    """(the attempt's folder laid out for its child, None), or (None, {"code", "message"}) when it cannot run.

    `gpus`: the GPUs the job trains on, handed to the child as the request's `gpus` (0: the CPU).
    """
    teacher, train, eval_, student = _input_rows(job)
    problem = _problem(job, teacher, train, eval_, student)
    if problem:
        return None, problem

    def spec(row: Dataset) -> dict:
        return {"path": str(storage.local_path(row.path)), **dataset_spec_options(row, storage)}

    settings = get_settings()
    config = {**job.hyperparameters, "student": dict(job.student), "export": job.export, "baseline": job.baseline}
    staged = stage(
        storage.job_dir(job.tenant_id, job.id),
        job.attempt,
        teacher=storage.local_path(teacher.path),
        train=spec(train),
        evaluation=spec(eval_) if eval_ else None,
        config=config,
        student_model=storage.local_path(student.path) if student else None,
        cache_dir=storage.teacher_cache_dir(job.tenant_id, teacher.sha256),
        extra={
            "max_student_parameters": settings.max_student_parameters,
            "data_limits": data_limits(settings),
            "gpus": gpus,
            # Which engine path the child takes, from the teacher's validated info (not from the job's settings).
            "task": (teacher.info or {}).get("task") if teacher.format == "hf" else None,
        },
    )
    return staged, None
