"""A job's results: its artifacts (streamed to disk, checked against their sha256) and its report."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx

from distillery_client.connection import Connection
from distillery_client.exceptions import DistilleryError, raise_for_response
from distillery_client.shapes import Artifact, ByteProgress, Report


class ResultMethods(Connection):
    """/v1/jobs/{id}/artifacts and /v1/jobs/{id}/report."""

    def list_artifacts(self, job_id: str) -> list[Artifact]:
        """Name, format, size and sha256 of each file the job produced."""
        return [Artifact.model_validate(a) for a in self._json("GET", f"/v1/jobs/{job_id}/artifacts")["data"]]

    def _stream_to(self, job_id: str, name: str, partial: Path, progress: ByteProgress | None) -> tuple[str, str]:
        """Write the artifact to `partial`; returns (its sha256, the server's X-Checksum-Sha256 or '')."""
        digest = hashlib.sha256()
        timeout = httpx.Timeout(60.0, read=600.0)
        with self.http.stream("GET", f"/v1/jobs/{job_id}/artifacts/{name}", timeout=timeout) as resp:
            raise_for_response(resp)
            total = int(resp.headers.get("content-length") or 0)
            done = 0
            with open(partial, "wb") as f:
                for chunk in resp.iter_bytes(1 << 16):
                    f.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
            return digest.hexdigest(), resp.headers.get("x-checksum-sha256") or ""

    def download_artifact(
        self, job_id: str, name: str, dest: str | Path | None = None, *, progress: ByteProgress | None = None
    ) -> Path:
        """Stream an artifact to `dest` (a file, or a folder to put it in; default: the current folder)."""
        folder = dest is None or str(dest).endswith(("/", os.sep))
        dest = Path(dest) if dest is not None else Path(".")
        if folder or dest.is_dir():
            dest = dest / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".part")
        try:
            actual, expected = self._stream_to(job_id, name, partial, progress)
        except httpx.HTTPError as exc:
            partial.unlink(missing_ok=True)
            raise DistilleryError(0, "connection_error", f"download of {name} failed: {exc}") from exc
        if expected and expected != actual:
            partial.unlink(missing_ok=True)
            raise DistilleryError(0, "checksum_mismatch", f"{name}: sha256 differs from the server's")
        partial.replace(dest)
        return dest

    def report(self, job_id: str) -> Report:
        """The job's report; DistilleryError(404, 'report_not_ready') until it has one."""
        return Report.model_validate(self._json("GET", f"/v1/jobs/{job_id}/report"))

    def report_json(self, job_id: str) -> dict:
        """The report as the API's JSON, untouched."""
        return self._json("GET", f"/v1/jobs/{job_id}/report")

    def report_bytes(self, job_id: str) -> bytes:
        """The report exactly as the API sent it, byte for byte."""
        return self._request("GET", f"/v1/jobs/{job_id}/report").content

    def report_html(self, job_id: str) -> str:
        """The self-contained HTML report."""
        return self._request("GET", f"/v1/jobs/{job_id}/report.html").text

    def report_html_bytes(self, job_id: str) -> bytes:
        """The HTML report exactly as the API sent it."""
        return self._request("GET", f"/v1/jobs/{job_id}/report.html").content
