"""A job's files into --out: every artifact byte for byte (checked against its sha256) and report.html; the
salvaged checkpoint of a cancelled job; and the refusal of an --out that holds another job's files."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.markup import escape

from distillery_cli.output import err, fail, out
from distillery_cli.progress import byte_progress
from distillery_cli.tables import report_table
from distillery_client import Artifact, Distillery, DistilleryError, Job

SALVAGE = "checkpoint_student.safetensors"  # a cancelled job's last checkpoint, with checkpoint_student.json


def sha256_of(path: Path) -> str:
    """The file's sha256, read in 64 KiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _own_file(path: Path, job_id: str, by_name: dict[str, Artifact]) -> bool:
    """An artifact of this job as downloaded, or this job's report.html."""
    if not path.is_file() or path.is_symlink():
        return False
    if path.name in by_name and sha256_of(path) == by_name[path.name].sha256:
        return True
    return path.name == "report.html" and job_id in path.read_text(errors="replace")


def check_out(dest: Path, job_id: str | None, force: bool, artifacts: list | None = None) -> None:
    """Refuse an --out folder that holds anything but this job's own files, unless --force.

    A new job (job_id None) wants an empty or absent folder. A download may go into a folder that holds files of
    the same job: artifact names whose sha256 is the artifact's, and a report.html naming the job.
    """
    if dest.exists() and not dest.is_dir():
        raise fail(f"--out {escape(str(dest))} exists and is not a folder", 2)
    if force or not dest.is_dir():
        return
    by_name = {a.name: a for a in artifacts or []}
    foreign = [p.name for p in sorted(dest.iterdir()) if job_id is None or not _own_file(p, job_id, by_name)]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        whose = "another job's or unrelated files" if job_id else "files"
        raise fail(
            f"--out {escape(str(dest))} already holds {whose} ({escape(shown)}); "
            "choose an empty folder, or pass --force to write into it anyway",
            2,
        )


def download_all(client: Distillery, job: Job, dest: Path, *, force: bool = False) -> list[Path]:
    """Every artifact into dest, byte for byte (each checked against its sha256), then report.html.

    The job's report.json is its artifact as it is; a job without one (a cancelled job's salvage) has no report.
    """
    artifacts = client.list_artifacts(job.id)
    check_out(dest, job.id, force, artifacts)
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    with byte_progress(err) as bars:
        for art in artifacts:
            task = bars.add_task(f"download {art.name}", total=art.size_bytes or None)
            path = client.download_artifact(
                job.id,
                art.name,
                dest / art.name,
                progress=lambda done, total, task=task: bars.update(task, completed=done, total=total or None),
            )
            if sha256_of(path) != art.sha256:
                path.unlink(missing_ok=True)
                raise DistilleryError(0, "checksum_mismatch", f"{art.name}: sha256 differs from the artifact list's")
            paths.append(path)
    if job.status == "succeeded":
        if "report.json" not in {a.name for a in artifacts}:  # the API's report, its bytes as they came
            (dest / "report.json").write_bytes(client.report_bytes(job.id))
            paths.append(dest / "report.json")
        (dest / "report.html").write_bytes(client.report_html_bytes(job.id))
        paths.append(dest / "report.html")
    return paths


def salvaged(client: Distillery, job: Job, wait: float = 20.0) -> bool:
    """Whether a cancelled job kept its last checkpoint's student weights.

    The API marks the job cancelled at once; its worker stops it and records the salvage a few seconds later, so
    for a job cancelled within the last minute this waits up to `wait` seconds for it.
    """
    finished = job.finished_at
    if finished is not None and finished.tzinfo is None:
        finished = finished.replace(tzinfo=UTC)
    recent = finished is not None and (datetime.now(UTC) - finished).total_seconds() < 60
    deadline = time.monotonic() + (wait if recent else 0.0)
    while True:
        if any(a.name == SALVAGE for a in client.list_artifacts(job.id)):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def salvage_note(job: Job, dest: Path | None) -> str:
    """Where a cancelled job's last checkpoint went, or how to fetch it."""
    if dest is not None:
        return f"the job was cancelled; its last checkpoint's student weights were saved to {dest / SALVAGE}"
    return (
        "the job was cancelled; its last checkpoint's student weights are kept: "
        f"`distillery jobs download {job.id} --out DIR`"
    )


def finish(client: Distillery, job: Job, dest: Path | None, *, force: bool = False) -> None:
    """After a job ended: download it into dest (if given) and print its report, or exit 1 saying why not."""
    if job.status == "cancelled":
        kept = salvaged(client, job)
        if kept and dest is not None:
            download_all(client, job, dest, force=force)
        if kept:
            err.print(escape(salvage_note(job, dest)), highlight=False, soft_wrap=True)
        raise fail(f"job {job.id} cancelled (by request)")
    if job.status != "succeeded":
        error = job.error
        detail = f"{error.code}: {error.message}" if error else "no error recorded"
        raise fail(f"job {job.id} {job.status}: {escape(detail)}")
    if dest is not None:
        download_all(client, job, dest, force=force)
        err.print(f"files in [bold]{escape(str(dest))}[/] (report.html to look at)")
    out.print(report_table(client.report_json(job.id)))
