"""`distillery jobs ...`: list, show, watch, cancel, events and download jobs of a running service."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from distillery_cli import options
from distillery_cli.downloads import check_out, download_all, finish, salvage_note, salvaged
from distillery_cli.options import ForceOpt, JobId, JsonOpt, KeyOpt, UrlOpt
from distillery_cli.output import api_errors, dump, err, fail, out, print_json
from distillery_cli.progress import follow
from distillery_cli.tables import event_line, jobs_table
from distillery_client import TERMINAL

jobs_app = typer.Typer(help="Jobs on a running service.", no_args_is_help=True)


@jobs_app.command("list")
@api_errors
def jobs_list(
    status: Annotated[str | None, typer.Option(help="queued|running|succeeded|failed|cancelled")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first")] = 20,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """List jobs, newest first."""
    jobs = options.make_client(url, api_key).list_jobs(status=status, limit=limit)
    if as_json:
        print_json(dump(jobs))
    else:
        out.print(jobs_table(jobs))


@jobs_app.command("show")
@api_errors
def jobs_show(job_id: JobId, as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """One job: status, progress, metrics, configuration, error."""
    job = options.make_client(url, api_key).get_job(job_id)
    if as_json:
        print_json(dump(job))
        return
    table = Table(show_header=False, title=f"job {job.id}", title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in dump(job).items():
        text = json.dumps(value) if isinstance(value, dict | list) else ("—" if value is None else str(value))
        table.add_row(key, escape(text))
    out.print(table)


@jobs_app.command("watch")
@api_errors
def jobs_watch(
    job_id: JobId,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Also download into")] = None,
    force: Annotated[bool, ForceOpt] = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Follow a job live until it ends, then print its report (Ctrl-C: cancel it or leave it running)."""
    client = options.make_client(url, api_key)
    job = client.get_job(job_id)
    if out_dir is not None:
        check_out(out_dir, job_id, force, client.list_artifacts(job_id) if job.status in TERMINAL else [])
    if job.status not in TERMINAL:
        job = follow(client, job_id)
    finish(client, job, out_dir, force=force)


@jobs_app.command("cancel")
@api_errors
def jobs_cancel(job_id: JobId, as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """Cancel a queued or running job (409 once it has ended)."""
    job = options.make_client(url, api_key).cancel_job(job_id)
    if as_json:
        print_json(dump(job))
    else:
        out.print(f"job {job.id} is {job.status}")


@jobs_app.command("events")
@api_errors
def jobs_events(
    job_id: JobId,
    live: Annotated[bool, typer.Option("--follow", "-f", help="Stream until the job ends")] = False,
    after: Annotated[int, typer.Option(help="Start after this event id")] = 0,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """A job's events; --follow streams them live (with --json: one JSON object a line)."""
    client = options.make_client(url, api_key)
    if live:
        for event in client.events(job_id, after=after):
            if as_json:
                sys.stdout.write(event.model_dump_json() + "\n")
                sys.stdout.flush()
            else:
                out.print(event_line(event), highlight=False)
        return
    events = client.list_events(job_id, after=after)
    if as_json:
        print_json(dump(events))
    else:
        for event in events:
            out.print(event_line(event), highlight=False)


@jobs_app.command("download")
@api_errors
def jobs_download(
    job_id: JobId,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write into")],
    force: Annotated[bool, ForceOpt] = False,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Download every artifact of a finished job, with report.json and report.html.

    A cancelled job has no report, but the student weights of its last checkpoint when it had one.
    """
    client = options.make_client(url, api_key)
    job = client.get_job(job_id)
    if job.status == "cancelled":
        if not salvaged(client, job):
            raise fail(f"job {job_id} was cancelled (by request) before its first checkpoint; nothing was saved")
    elif job.status == "failed":
        detail = f"{job.error.code}: {job.error.message}" if job.error else "no error recorded"
        raise fail(f"job {job_id} failed ({escape(detail)}); it has no student to download")
    elif job.status != "succeeded":
        raise fail(
            f"job {job_id} is {job.status}; download it once it has ended "
            f"(`distillery jobs watch {job_id} --out {escape(str(out_dir))}` waits and downloads)"
        )
    paths = download_all(client, job, out_dir, force=force)
    if job.status == "cancelled":
        err.print(escape(salvage_note(job, out_dir)), highlight=False, soft_wrap=True)
    if as_json:
        print_json([str(p) for p in paths])
    else:
        for path in paths:
            out.print(str(path), highlight=False)
