"""`Distillery`: the whole API of one service for one API key (uploads, jobs, results)."""

from __future__ import annotations

from distillery_client.job_methods import JobMethods
from distillery_client.result_methods import ResultMethods
from distillery_client.upload_methods import UploadMethods


class Distillery(UploadMethods, JobMethods, ResultMethods):
    """A client for one service URL and one API key.

    `url` defaults to DISTILLERY_URL (else http://127.0.0.1:8000), `api_key` to DISTILLERY_API_KEY (else
    the key `distillery up` wrote in .distillery/api_key). `transport` goes to httpx (tests inject faults).
    Uploads first check the key and the service with one cheap GET (`check_access`).
    """

    def __enter__(self) -> Distillery:
        return self
