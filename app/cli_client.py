"""The client side of `distillery`: `run` (files -> distilled student), `jobs`, `models`, `datasets`.

It talks to a running service with app.client (URL and key from --url/--api-key, DISTILLERY_URL and
DISTILLERY_API_KEY, or the key `distillery up` keeps in .distillery/api_key). It never imports torch.

Exit codes: 0 done, 1 the API answered an error or the job did not succeed, 2 bad arguments, 130 interrupted.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
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
from rich.table import Table

from app.client import TERMINAL, Distillery, DistilleryError, Event, Job
from contract.student_syntax import parse_student
from contract.wire import Hyperparameters, StudentSpec

out = Console()  # results (tables, JSON) on stdout
err = Console(stderr=True)  # progress and messages on stderr, so that stdout stays parseable

jobs_app = typer.Typer(help="Jobs on a running service.", no_args_is_help=True)
models_app = typer.Typer(help="Uploaded models.", no_args_is_help=True)
datasets_app = typer.Typer(help="Uploaded datasets.", no_args_is_help=True)

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url", envvar="DISTILLERY_URL", show_envvar=True, help="Service URL (default http://127.0.0.1:8000)"
    ),
]
KeyOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="DISTILLERY_API_KEY",
        show_envvar=True,
        show_default=False,
        help="API key (default: .distillery/api_key)",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts")]
JobId = Annotated[str, typer.Argument(help="Job id")]
ForceOpt = typer.Option("--force", metavar="", help="Write into --out even when it holds other files (another job's)")


def _client(url: str | None, api_key: str | None) -> Distillery:
    return Distillery(url, api_key)


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, markup=True, soft_wrap=True)
    return typer.Exit(code)


def api_errors(func):
    """Turn DistilleryError into 'error: <the API's message>' and exit 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except DistilleryError as exc:
            detail = f" ({exc.status} {exc.code})" if exc.status else ""
            raise _fail(_escape(exc.message) + detail) from None

    return wrapper


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")
    sys.stdout.flush()


def _dump(obj) -> Any:
    if isinstance(obj, list):
        return [_dump(o) for o in obj]
    return obj.model_dump(mode="json") if hasattr(obj, "model_dump") else obj


# -- formatting -------------------------------------------------------------------------------------------


def _num(value: Any, decimals: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{decimals}f}"
    return str(value)


def _bytes(n: Any) -> str:
    if not isinstance(n, int | float):
        return "—"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return "—"


def _ratio(value: Any) -> str:
    """A ratio with one decimal: 86.5630 -> '86.6×'."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "—"
    return f"{value:.1f}×"


def report_table(report: dict) -> Table:
    """Teacher vs student (and the baseline when present): accuracy, agreement, parameters, size, latency."""
    teacher, student = report.get("teacher") or {}, report.get("student") or {}
    baseline = report.get("baseline") or None
    table = Table(title=f"Distillation report {report.get('job_id') or ''}".strip(), title_justify="left")
    table.add_column("")
    table.add_column("teacher", justify="right")
    table.add_column("student", justify="right")
    if baseline:
        table.add_column("baseline (no teacher)", justify="right")

    def row(label: str, t: str, s: str, b: str = "—") -> None:
        table.add_row(label, t, s, *([b] if baseline else []))

    b = baseline or {}
    row("accuracy", _num(teacher.get("accuracy")), _num(student.get("accuracy")), _num(b.get("accuracy")))
    row("agreement with teacher", "—", _num(student.get("agreement")), _num(b.get("agreement")))
    row("parameters", _num(teacher.get("num_parameters")), _num(student.get("num_parameters")))
    row("size", _bytes(teacher.get("size_bytes")), _bytes(student.get("size_bytes")))
    t_lat, s_lat = teacher.get("latency_ms") or {}, student.get("latency_ms") or {}
    speedup = report.get("speedup") or {}
    for key in sorted(set(t_lat) | set(s_lat)):
        label = key.replace("_", " ")
        row(f"latency {label} (ms)", _num(t_lat.get(key)), _num(s_lat.get(key)))
        if speedup.get(key) is not None:
            row(f"speedup {label}", "", _ratio(speedup[key]))
    if report.get("compression_ratio") is not None:
        row("compression (parameters)", "", _ratio(report["compression_ratio"]))
    table.caption = (
        f"eval examples {_num(report.get('eval_examples'))} · device {report.get('device') or '—'} · "
        f"train {_num(report.get('train_seconds'), 1)} s"
    )
    return table


# -- live progress ----------------------------------------------------------------------------------------


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
        self.last_status: str | None = None

    def __enter__(self) -> JobProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def log(self, text: str) -> None:
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

    def __call__(self, event: Event) -> None:
        data = event.data or {}
        if event.type == "progress":
            self.epoch, self.epochs = data.get("epoch", self.epoch), data.get("epochs", self.epochs)
            self.step, self.total_steps = (
                data.get("step", self.step),
                data.get("total_steps", self.total_steps),
            )
            self.fraction = float(data.get("fraction") or 0.0)
            if self.t0 is None:
                self.t0 = (time.monotonic(), self.fraction)
        elif event.type == "metrics":
            if isinstance(data.get("epoch"), int) and self.epochs is not None:  # the epoch that just ended
                self.epoch = max(self.epoch or 0, min(data["epoch"], self.epochs))
            self.loss = data.get("train_loss", self.loss)
            self.agreement = data.get("eval_agreement", self.agreement)
            self.accuracy = data.get("eval_accuracy", self.accuracy)
        elif event.type == "phase":
            self.phase = data.get("phase") or self.phase
            self.log(f"[dim]{event.created_at:%H:%M:%S}[/] phase: {_escape(event.message)}")
        elif event.type == "status":
            self.phase = data.get("status") or self.phase
            if self.phase == "succeeded":  # progress events are throttled: the last one may be an epoch back
                self.fraction = 1.0
                if self.epochs is not None:
                    self.epoch = self.epochs
                if self.total_steps is not None:
                    self.step = self.total_steps
            self.log(f"[dim]{event.created_at:%H:%M:%S}[/] {_escape(event.message)}")
        else:
            style = "yellow" if event.level == "warning" or event.type == "warning" else "dim"
            self.log(f"[dim]{event.created_at:%H:%M:%S}[/] [{style}]{event.type}: {_escape(event.message)}[/]")
        self._refresh()


def follow(client: Distillery, job_id: str, *, cancel_on_interrupt: bool | None = None) -> Job:
    """Show a job's live progress until it ends. Ctrl-C asks whether to cancel it or leave it running."""
    try:
        with JobProgress(err) as view:
            job = client.wait(job_id, on_event=view)
        return job
    except KeyboardInterrupt:
        err.print()
        cancel = cancel_on_interrupt
        if cancel is None:
            try:
                cancel = typer.confirm(
                    f"Cancel job {job_id}? (no: leave it running on the service)", default=False, err=True
                )
            except (typer.Abort, KeyboardInterrupt, EOFError):
                cancel = False
        if cancel:
            try:
                job = client.cancel_job(job_id)
                err.print(f"job {job_id} is {job.status}")
            except DistilleryError as exc:
                err.print(f"[red]could not cancel:[/] {_escape(exc.message)}")
        else:
            err.print(
                f"job {job_id} left running; follow it with `distillery jobs watch {job_id}`, "
                f"fetch it with `distillery jobs download {job_id} --out DIR`"
            )
        raise typer.Exit(130) from None


def _byte_progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


SALVAGE = "checkpoint_student.safetensors"  # a cancelled job's last checkpoint, with checkpoint_student.json


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_out(dest: Path, job_id: str | None, force: bool, artifacts: list | None = None) -> None:
    """Refuse an --out folder that holds anything but this job's own files, unless --force.

    A new job (job_id None) wants an empty or absent folder. A download may go into a folder that holds files of
    the same job: artifact names whose sha256 is the artifact's, and a report.html naming the job.
    """
    if dest.exists() and not dest.is_dir():
        raise _fail(f"--out {_escape(str(dest))} exists and is not a folder", 2)
    if force or not dest.is_dir():
        return
    present = sorted(p.name for p in dest.iterdir())
    if not present:
        return
    by_name = {a.name: a for a in artifacts or []}
    foreign = []
    for name in present:
        path = dest / name
        if job_id is not None and path.is_file() and not path.is_symlink():
            if name in by_name and _sha256(path) == by_name[name].sha256:
                continue
            if name == "report.html" and job_id in path.read_text(errors="replace"):
                continue
        foreign.append(name)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        whose = "another job's or unrelated files" if job_id else "files"
        raise _fail(
            f"--out {_escape(str(dest))} already holds {whose} ({_escape(shown)}); "
            "choose an empty folder, or pass --force to write into it anyway",
            2,
        )


def download_all(client: Distillery, job: Job, dest: Path, *, force: bool = False) -> list[Path]:
    """Every artifact into dest, byte for byte (each checked against its sha256), then report.html.

    The job's report.json is its artifact as it is; a job without one (a cancelled job's salvage) has no report.
    """
    artifacts = client.list_artifacts(job.id)
    _check_out(dest, job.id, force, artifacts)
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    with _byte_progress(err) as bars:
        for art in artifacts:
            task = bars.add_task(f"download {art.name}", total=art.size_bytes or None)
            path = client.download_artifact(
                job.id,
                art.name,
                dest / art.name,
                progress=lambda done, total, task=task: bars.update(task, completed=done, total=total or None),
            )
            if _sha256(path) != art.sha256:
                path.unlink(missing_ok=True)
                raise DistilleryError(0, "checksum_mismatch", f"{art.name}: sha256 differs from the artifact list's")
            paths.append(path)
    if job.status == "succeeded":
        names = {a.name for a in artifacts}
        if "report.json" not in names:  # the API's report, its bytes as they came
            body = client._request("GET", f"/v1/jobs/{job.id}/report").content
            (dest / "report.json").write_bytes(body)
            paths.append(dest / "report.json")
        html = client._request("GET", f"/v1/jobs/{job.id}/report.html").content
        (dest / "report.html").write_bytes(html)
        paths.append(dest / "report.html")
    return paths


def _salvaged(client: Distillery, job: Job, wait: float = 20.0) -> bool:
    """Whether a cancelled job kept its last checkpoint's student weights.

    The API marks the job cancelled at once; its worker stops it and records the salvage a few seconds later, so
    for a job cancelled within the last minute this waits up to `wait` seconds for it.
    """
    from datetime import UTC, datetime

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


def _salvage_note(job: Job, dest: Path | None) -> str:
    if dest is not None:
        return f"the job was cancelled; its last checkpoint's student weights were saved to {dest / SALVAGE}"
    return (
        "the job was cancelled; its last checkpoint's student weights are kept: "
        f"`distillery jobs download {job.id} --out DIR`"
    )


def _finish(client: Distillery, job: Job, dest: Path | None, *, force: bool = False) -> None:
    if job.status == "cancelled":
        salvaged = _salvaged(client, job)
        if salvaged and dest is not None:
            download_all(client, job, dest, force=force)
        if salvaged:
            err.print(_escape(_salvage_note(job, dest)), highlight=False, soft_wrap=True)
        raise _fail(f"job {job.id} cancelled (by request)")
    if job.status != "succeeded":
        error = job.error
        detail = f"{error.code}: {error.message}" if error else "no error recorded"
        raise _fail(f"job {job.id} {job.status}: {_escape(detail)}")
    if dest is not None:
        download_all(client, job, dest, force=force)
        err.print(f"files in [bold]{_escape(str(dest))}[/] (report.html to look at)")
    out.print(report_table(client.report_json(job.id)))


# -- distillery run ---------------------------------------------------------------------------------------


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [p.strip() for p in text.split(",") if p.strip()]


def _help(name: str) -> str:
    """A hyperparameter's help text, from the contract's table."""
    from contract import HYPERPARAMETERS_BY_NAME

    return HYPERPARAMETERS_BY_NAME[name].help


@api_errors
def run(
    teacher: Annotated[
        Path,
        typer.Option(help="Teacher model: TorchScript, .pt2 or ONNX", exists=True, dir_okay=False, readable=True),
    ],
    train: Annotated[
        Path,
        typer.Option(
            "--train",
            "--data",
            help="Training data (.npz, CSV, JSONL, Parquet)",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the student files and the report")],
    eval_: Annotated[
        Path | None,
        typer.Option(
            "--eval",
            help="Eval data (default: a seeded 20% of train)",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ] = None,
    student: Annotated[
        str, typer.Option(help="'mlp:hidden_sizes=[32]' or a JSON object")
    ] = '{"architecture": "mlp", "hidden_sizes": [64]}',
    tokenizer: Annotated[
        Path | None, typer.Option(help="tokenizer.json for a text column", exists=True, dir_okay=False)
    ] = None,
    text_column: Annotated[str | None, typer.Option(help="Text column of a table")] = None,
    label_column: Annotated[str | None, typer.Option(help="Label column of a table (default: label)")] = None,
    max_length: Annotated[int | None, typer.Option(help="Tokens per example (default 128)")] = None,
    classes: Annotated[str | None, typer.Option(help="Comma-separated order of string labels")] = None,
    epochs: Annotated[int | None, typer.Option(help="training epochs (10)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="batch size (64)")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="AdamW learning rate (0.001)")] = None,
    temperature: Annotated[float | None, typer.Option(help="softmax temperature (4.0)")] = None,
    alpha: Annotated[float | None, typer.Option(help="weight of the teacher's soft targets (0.9)")] = None,
    loss: Annotated[str | None, typer.Option(help="kl | mse | dkd")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed (0)")] = None,
    patience: Annotated[int | None, typer.Option(help="epochs without improvement before stopping")] = None,
    dkd_alpha: Annotated[float | None, typer.Option(help="DKD target-class weight (1.0)")] = None,
    dkd_beta: Annotated[float | None, typer.Option(help="DKD non-target weight (8.0)")] = None,
    weight_decay: Annotated[float | None, typer.Option(help=_help("weight_decay"))] = None,
    warmup_fraction: Annotated[float | None, typer.Option(help=_help("warmup_fraction"))] = None,
    grad_clip: Annotated[str | None, typer.Option(help=_help("grad_clip") + " ('null': no clipping)")] = None,
    compile: Annotated[bool | None, typer.Option("--compile/--no-compile", help=_help("compile"))] = None,
    augmentation: Annotated[str | None, typer.Option(help='JSON, e.g. {"token_dropout": 0.2}')] = None,
    export: Annotated[str, typer.Option(help="Comma-separated export formats")] = "torchscript,safetensors",
    baseline: Annotated[
        bool,
        typer.Option("--baseline", metavar="", help="Also train the student without the teacher"),
    ] = False,
    force: Annotated[bool, ForceOpt] = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Upload a teacher and data, distil, follow the job live, and download the student and its report."""
    # Check everything that can be checked here before sending any bytes.
    try:
        student_spec = StudentSpec.model_validate(parse_student(student)).model_dump(exclude_none=True)
    except (ValueError, ValidationError) as exc:
        raise _fail(_escape(_validation_text(exc, "student")), 2) from None
    option = "hyperparameters"
    try:
        hyper: dict[str, Any] = {
            k: v
            for k, v in {
                "epochs": epochs,
                "batch_size": batch_size,
                "learning_rate": learning_rate,
                "temperature": temperature,
                "alpha": alpha,
                "loss": loss,
                "seed": seed,
                "patience": patience,
                "dkd_alpha": dkd_alpha,
                "dkd_beta": dkd_beta,
                "weight_decay": weight_decay,
                "warmup_fraction": warmup_fraction,
                "compile": compile,
            }.items()
            if v is not None
        }
        if grad_clip is not None:  # 'null' asks for no clipping, which the API takes as an explicit null
            option = "--grad-clip"
            hyper["grad_clip"] = None if grad_clip.strip().lower() in ("null", "none") else float(grad_clip)
        if augmentation:
            option = "--augmentation"
            hyper["augmentation"] = json.loads(augmentation)
        option = "hyperparameters"
        Hyperparameters.model_validate(hyper)
    except (ValueError, ValidationError) as exc:
        raise _fail(_escape(_validation_text(exc, option)), 2) from None
    _check_out(out_dir, None, force)

    client = _client(url, api_key)
    dataset_fields = {
        "tokenizer": tokenizer,
        "text_column": text_column,
        "label_column": label_column,
        "max_length": max_length,
        "classes": _split(classes),
    }
    uploads: list = []
    try:
        with _byte_progress(err) as bars:

            def upload(kind: str, path: Path):
                task = bars.add_task(f"upload {path.name}", total=path.stat().st_size)

                def on_bytes(done: int, total: int) -> None:
                    bars.update(task, completed=done, total=total or None)

                if kind == "model":
                    uploads.append(client.upload_model(path, progress=on_bytes))
                else:
                    uploads.append(client.upload_dataset(path, progress=on_bytes, **dataset_fields))

            upload("model", teacher)
            upload("dataset", train)
            if eval_ is not None:
                upload("dataset", eval_)
        with err.status("validating uploads on the worker..."):
            ready = client.wait_ready(*uploads)
    except KeyboardInterrupt:
        _interrupted_uploads(uploads)
        raise typer.Exit(130) from None
    for item in ready:
        err.print(f"{item.id} {_escape(item.name)}: {item.status} ({_escape(item.format)})", highlight=False)
    job = client.create_job(
        ready[0].id,
        ready[1].id,
        eval_dataset_id=ready[2].id if eval_ is not None else None,
        student=student_spec,
        hyperparameters=hyper or None,
        export=_split(export),
        baseline=baseline,
    )
    err.print(f"job [bold]{job.id}[/] {job.status}")
    job = follow(client, job.id)
    _finish(client, job, out_dir, force=True)  # --out was checked before the uploads


_PYDANTIC_PREFIXES = ("Value error, ", "Assertion failed, ")


def _interrupted_uploads(uploads: list) -> None:
    """Ctrl-C before the job: say which uploads stay on the service and how to delete them."""
    err.print()
    if not uploads:
        err.print("interrupted; nothing was left on the service", highlight=False)
        return
    models = [u.id for u in uploads if u.id.startswith("mdl_")]
    datasets = [u.id for u in uploads if not u.id.startswith("mdl_")]
    err.print(f"interrupted; left on the service: {', '.join(u.id for u in uploads)}", highlight=False)
    commands = []
    if models:
        commands.append(f"distillery models delete {' '.join(models)}")
    if datasets:
        commands.append(f"distillery datasets delete {' '.join(datasets)}")
    err.print(f"delete them with: {' && '.join(commands)}", highlight=False, soft_wrap=True)


def _validation_text(exc: Exception, where: str) -> str:
    """'student: architecture must be one of ...', '--epochs: ...': no pydantic wording, no 'value:'."""
    if not isinstance(exc, ValidationError):
        return f"{where}: {exc}"
    lines = []
    for e in exc.errors():
        msg = str(e["msg"])
        for prefix in _PYDANTIC_PREFIXES:
            msg = msg.removeprefix(prefix)
        loc = ".".join(map(str, e["loc"]))
        if where == "hyperparameters" and loc:
            name = f"--{str(e['loc'][0]).replace('_', '-')}" + "".join(f".{x}" for x in e["loc"][1:])
        else:
            name = f"{where}.{loc}" if loc else where
        lines.append(f"{name}: {msg}")
    return "; ".join(lines)


# -- distillery jobs / models / datasets --------------------------------------------------------------


def _jobs_table(jobs: list[Job]) -> Table:
    table = Table()
    for name in ("id", "status", "phase", "progress", "student", "accuracy", "agreement", "created"):
        table.add_column(name, justify="right" if name in ("progress", "accuracy", "agreement") else "left")
    for job in jobs:
        fraction = job.progress.fraction
        arch = job.student.get("architecture") or job.student.get("model_id") or ""
        table.add_row(
            job.id,
            job.status,
            job.phase or "",
            "" if fraction is None else f"{fraction:.0%}",
            arch,
            _num(job.metrics.eval_accuracy),
            _num(job.metrics.eval_agreement),
            f"{job.created_at:%Y-%m-%d %H:%M:%S}",
        )
    return table


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
    jobs = _client(url, api_key).list_jobs(status=status, limit=limit)
    if as_json:
        _print_json(_dump(jobs))
    else:
        out.print(_jobs_table(jobs))


@jobs_app.command("show")
@api_errors
def jobs_show(job_id: JobId, as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """One job: status, progress, metrics, configuration, error."""
    job = _client(url, api_key).get_job(job_id)
    if as_json:
        _print_json(_dump(job))
        return
    table = Table(show_header=False, title=f"job {job.id}", title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in _dump(job).items():
        text = json.dumps(value) if isinstance(value, dict | list) else ("—" if value is None else str(value))
        table.add_row(key, _escape(text))
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
    client = _client(url, api_key)
    job = client.get_job(job_id)
    if out_dir is not None:
        _check_out(out_dir, job_id, force, client.list_artifacts(job_id) if job.status in TERMINAL else [])
    if job.status not in TERMINAL:
        job = follow(client, job_id)
    _finish(client, job, out_dir, force=force)


@jobs_app.command("cancel")
@api_errors
def jobs_cancel(job_id: JobId, as_json: JsonOpt = False, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """Cancel a queued or running job (409 once it has ended)."""
    job = _client(url, api_key).cancel_job(job_id)
    if as_json:
        _print_json(_dump(job))
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
    client = _client(url, api_key)
    if live:
        for event in client.events(job_id, after=after):
            if as_json:
                sys.stdout.write(event.model_dump_json() + "\n")
                sys.stdout.flush()
            else:
                out.print(_event_line(event), highlight=False)
        return
    events = client.list_events(job_id, after=after)
    if as_json:
        _print_json(_dump(events))
    else:
        for event in events:
            out.print(_event_line(event), highlight=False)


def _event_line(event: Event) -> str:
    data = f" {json.dumps(event.data)}" if event.data else ""
    return f"{event.id:>6} {event.created_at:%H:%M:%S} {event.type:<9} {_escape(event.message)}{_escape(data)}"


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
    client = _client(url, api_key)
    job = client.get_job(job_id)
    if job.status == "cancelled":
        if not _salvaged(client, job):
            raise _fail(f"job {job_id} was cancelled (by request) before its first checkpoint; nothing was saved")
    elif job.status == "failed":
        detail = f"{job.error.code}: {job.error.message}" if job.error else "no error recorded"
        raise _fail(f"job {job_id} failed ({_escape(detail)}); it has no student to download")
    elif job.status != "succeeded":
        raise _fail(
            f"job {job_id} is {job.status}; download it once it has ended "
            f"(`distillery jobs watch {job_id} --out {_escape(str(out_dir))}` waits and downloads)"
        )
    paths = download_all(client, job, out_dir, force=force)
    if job.status == "cancelled":
        err.print(_escape(_salvage_note(job, out_dir)), highlight=False, soft_wrap=True)
    if as_json:
        _print_json([str(p) for p in paths])
    else:
        for path in paths:
            out.print(str(path), highlight=False)


def _info_summary(info: dict | None) -> str:
    """An upload's info in a few words: 'npz · input 64 · 10 classes · 1,437 rows'."""
    if not info:
        return ""
    parts = []
    if info.get("format"):
        parts.append(str(info["format"]))
    shape = (info.get("input") or {}).get("shape") if isinstance(info.get("input"), dict) else None
    if isinstance(shape, list):
        parts.append("input " + ("×".join(map(str, shape)) if shape else "scalar"))
    if isinstance(info.get("num_parameters"), int):
        parts.append(f"{info['num_parameters']:,} parameters")
    classes = info.get("num_classes")
    if classes is None and isinstance(info.get("classes"), list):
        classes = len(info["classes"])
    if isinstance(classes, int):
        parts.append(f"{classes} classes")
    if isinstance(info.get("rows"), int):
        parts.append(f"{info['rows']:,} rows")
    return " · ".join(parts)


def _uploads_table(rows) -> Table:
    table = Table()
    for name in ("id", "name", "format", "status", "size", "created", "info / error"):
        table.add_column(name, justify="right" if name == "size" else "left")
    for row in rows:
        note = (row.error or {}).get("message") if row.status == "invalid" else _info_summary(row.info)
        table.add_row(
            row.id,
            _escape(row.name),
            row.format,
            row.status,
            _bytes(row.size_bytes),
            f"{row.created_at:%Y-%m-%d %H:%M:%S}",
            _escape(str(note or ""))[:80],
        )
    return table


@models_app.command("list")
@api_errors
def models_list(
    limit: Annotated[int, typer.Option(help="How many, newest first")] = 20,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """List uploaded models, newest first."""
    rows = _client(url, api_key).list_models(limit=limit)
    if as_json:
        _print_json(_dump(rows))
    else:
        out.print(_uploads_table(rows))


@datasets_app.command("list")
@api_errors
def datasets_list(
    limit: Annotated[int, typer.Option(help="How many, newest first")] = 20,
    as_json: JsonOpt = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """List uploaded datasets, newest first."""
    rows = _client(url, api_key).list_datasets(limit=limit)
    if as_json:
        _print_json(_dump(rows))
    else:
        out.print(_uploads_table(rows))


@models_app.command("delete")
@api_errors
def models_delete(
    model_ids: Annotated[list[str], typer.Argument(help="Model ids")], url: UrlOpt = None, api_key: KeyOpt = None
) -> None:
    """Delete uploaded models (409 while a queued or running job uses one)."""
    client = _client(url, api_key)
    for model_id in model_ids:
        client._request("DELETE", f"/v1/models/{model_id}")
        out.print(f"deleted {model_id}", highlight=False)


@datasets_app.command("delete")
@api_errors
def datasets_delete(
    dataset_ids: Annotated[list[str], typer.Argument(help="Dataset ids")],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
) -> None:
    """Delete uploaded datasets (409 while a queued or running job uses one)."""
    client = _client(url, api_key)
    for dataset_id in dataset_ids:
        client._request("DELETE", f"/v1/datasets/{dataset_id}")
        out.print(f"deleted {dataset_id}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add `run`, `jobs`, `models` and `datasets` to the `distillery` command."""
    app.command("run")(run)
    app.add_typer(jobs_app, name="jobs")
    app.add_typer(models_app, name="models")
    app.add_typer(datasets_app, name="datasets")
