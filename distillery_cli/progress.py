"""Live progress on stderr: a job's progress line fed by its events, and byte bars for uploads and downloads."""

from __future__ import annotations

import time

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from distillery_cli.output import err
from distillery_client import Distillery, DistilleryError, Event, Job


class JobProgress:
    """A rich progress line fed by the job's events: phase, epoch, step, loss, agreement, ETA."""

    BAR = 20
    DESCRIPTION = 10  # the phase, cut to this many characters

    def __init__(self, console: Console):
        # Percent and ETA come right after a short bar; the detail, last, is cut to what the width leaves.
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=self.BAR),
            TaskProgressColumn(),
            TextColumn("{task.fields[eta]}"),
            TextColumn("{task.fields[detail]}"),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task("queued", total=1.0, detail="", eta="")
        self.phase = "queued"
        self.epoch = self.epochs = self.step = self.total_steps = None
        self.loss = self.agreement = self.accuracy = None
        self.fraction = 0.0
        self.t0: tuple[float, float] | None = None  # (time, fraction) when training progress began

    def __enter__(self) -> JobProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def log(self, text: str) -> None:
        """A line above the progress line."""
        self.progress.console.print(text, highlight=False)

    def _eta(self) -> str:
        if self.t0 is None or self.fraction <= self.t0[1]:
            return ""
        elapsed = time.monotonic() - self.t0[0]
        remaining = elapsed / (self.fraction - self.t0[1]) * (1 - self.fraction)
        minutes, seconds = divmod(int(remaining + 0.5), 60)
        return f"ETA {minutes}:{seconds:02d}"

    def _refresh(self) -> None:
        parts = []
        if self.epoch is not None:
            parts.append(f"epoch {self.epoch}/{self.epochs}")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.agreement is not None:
            parts.append(f"agreement {self.agreement:.4f}")
        if self.step is not None:
            parts.append(f"step {self.step}/{self.total_steps}")
        eta = self._eta() if self.phase == "training" else ""
        description = self.phase[: self.DESCRIPTION]
        # spinner, description, bar, "100%", ETA, each followed by one space; what is left is the detail's.
        room = self.progress.console.width - (2 + len(description) + 1 + self.BAR + 1 + 4 + 1 + len(eta) + 1) - 1
        while parts and len(" · ".join(parts)) > room:
            parts.pop()
        self.progress.update(
            self.task, description=description, completed=self.fraction, detail=" · ".join(parts), eta=eta
        )

    def _on_progress(self, data: dict) -> None:
        self.epoch, self.epochs = data.get("epoch", self.epoch), data.get("epochs", self.epochs)
        self.step, self.total_steps = data.get("step", self.step), data.get("total_steps", self.total_steps)
        self.fraction = float(data.get("fraction") or 0.0)
        if self.t0 is None:
            self.t0 = (time.monotonic(), self.fraction)

    def _on_metrics(self, data: dict) -> None:
        if isinstance(data.get("epoch"), int) and self.epochs is not None:  # the epoch that just ended
            self.epoch = max(self.epoch or 0, min(data["epoch"], self.epochs))
        self.loss = data.get("train_loss", self.loss)
        # validation_*: the validation slice's numbers (named eval_* by older services)
        self.agreement = data.get("validation_agreement", data.get("eval_agreement", self.agreement))
        self.accuracy = data.get("validation_accuracy", data.get("eval_accuracy", self.accuracy))

    def _on_status(self, event: Event) -> None:
        self.phase = (event.data or {}).get("status") or self.phase
        if self.phase == "succeeded":  # progress events are throttled: the last one may be an epoch back
            self.fraction = 1.0
            if self.epochs is not None:
                self.epoch = self.epochs
            if self.total_steps is not None:
                self.step = self.total_steps
        self.log(f"[dim]{event.created_at:%H:%M:%S}[/] {escape(event.message)}")

    def __call__(self, event: Event) -> None:
        data = event.data or {}
        if event.type == "progress":
            self._on_progress(data)
        elif event.type == "metrics":
            self._on_metrics(data)
        elif event.type == "phase":
            self.phase = data.get("phase") or self.phase
            self.log(f"[dim]{event.created_at:%H:%M:%S}[/] phase: {escape(event.message)}")
        elif event.type == "status":
            self._on_status(event)
        else:
            style = "yellow" if event.level == "warning" or event.type == "warning" else "dim"
            self.log(f"[dim]{event.created_at:%H:%M:%S}[/] [{style}]{event.type}: {escape(event.message)}[/]")
        self._refresh()


def _ask_cancel(job_id: str) -> bool:
    try:
        return typer.confirm(f"Cancel job {job_id}? (no: leave it running on the service)", default=False, err=True)
    except (typer.Abort, KeyboardInterrupt, EOFError):
        return False


def follow(client: Distillery, job_id: str, *, cancel_on_interrupt: bool | None = None) -> Job:
    """Show a job's live progress until it ends. Ctrl-C asks whether to cancel it or leave it running."""
    try:
        with JobProgress(err) as view:
            return client.wait(job_id, on_event=view)
    except KeyboardInterrupt:
        err.print()
        cancel = _ask_cancel(job_id) if cancel_on_interrupt is None else cancel_on_interrupt
        if cancel:
            try:
                job = client.cancel_job(job_id)
                err.print(f"job {job_id} is {job.status}")
            except DistilleryError as exc:
                err.print(f"[red]could not cancel:[/] {escape(exc.message)}")
        else:
            err.print(
                f"job {job_id} left running; follow it with `distillery jobs watch {job_id}`, "
                f"fetch it with `distillery jobs download {job_id} --out DIR`"
            )
        raise typer.Exit(130) from None


def byte_progress(console: Console) -> Progress:
    """Bars with bytes done, speed and time left, for uploads and downloads."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
