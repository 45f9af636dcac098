"""The Python client of the Distillery API (sync, httpx). Needs httpx, pydantic and the contract package: never
FastAPI, SQLAlchemy, Celery or torch, so `pip install distillery` (without the `server` extra) is enough.

    from distillery_client import Distillery

    with Distillery() as api:                       # DISTILLERY_URL, DISTILLERY_API_KEY
        teacher = api.upload_model("teacher.pt")
        train = api.upload_dataset("train.csv", label_column="label")
        api.wait_ready(teacher, train)
        job = api.create_job(teacher.id, train.id, student="mlp:hidden_sizes=[32]",
                             hyperparameters={"epochs": 20})
        job = api.wait(job.id, on_event=print)
        api.download_artifact(job.id, "student.pt", "student.pt")
        print(api.report(job.id).student)

Every API error raises `DistilleryError(status, code, message)`.

    connection      URL, key, httpx plumbing and the pre-upload check_access
    upload_methods  models and datasets        job_methods     jobs and their events (live, as SSE)
    result_methods  artifacts and the report   shapes          the returned models; sse  the event parser
"""

from contract import TERMINAL
from distillery_client.client import Distillery
from distillery_client.connection import DEFAULT_URL
from distillery_client.exceptions import DistilleryError
from distillery_client.shapes import Artifact, Dataset, Event, Job, Model, Report

__all__ = [
    "Distillery",
    "DistilleryError",
    "Report",
    "Job",
    "Model",
    "Dataset",
    "Event",
    "Artifact",
    "DEFAULT_URL",
    "TERMINAL",
]
