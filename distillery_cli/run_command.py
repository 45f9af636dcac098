"""`distillery run`: upload a teacher and data, distil, follow the job live, download the student and report.

Everything that can be checked here is checked before any byte is sent: the student spec and hyperparameters
(by the API's own models), the export formats, the files, --out, and then the key and the service (one GET).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import TypeAdapter, ValidationError
from rich.markup import escape

from contract.student_syntax import parse_student
from contract.wire import JobCreate, Resources, StudentSpec
from distillery_cli import options
from distillery_cli.downloads import check_out, finish
from distillery_cli.hyper_options import hyperparameters, with_hyperparameter_options
from distillery_cli.options import ForceOpt, KeyOpt, UrlOpt
from distillery_cli.output import api_errors, err, fail, validation_text
from distillery_cli.progress import byte_progress, follow
from distillery_client import Distillery

_FILE = {"exists": True, "dir_okay": False, "readable": True}
TeacherOpt = Annotated[Path, typer.Option(help="Teacher model: TorchScript, .pt2 or ONNX", **_FILE)]
TrainOpt = Annotated[Path, typer.Option("--train", "--data", help="Training data (.npz, CSV, JSONL, Parquet)", **_FILE)]
OutOpt = Annotated[Path, typer.Option("--out", help="Folder for the student files and the report")]
EvalOpt = Annotated[Path | None, typer.Option("--eval", help="Eval data (default: a seeded 20% of train)", **_FILE)]
StudentOpt = Annotated[
    str | None,
    typer.Option(help="'mlp:hidden_sizes=[32]' or a JSON object (default: by the data, mlp [64] or a BiLSTM for text)"),
]
TokenizerOpt = Annotated[Path | None, typer.Option(help="tokenizer.json for a text column", **_FILE)]
TextColumnOpt = Annotated[str | None, typer.Option(help="Text column of a table")]
TokenizerFromTeacherOpt = Annotated[
    bool,
    typer.Option(
        "--tokenizer-from-teacher",
        metavar="",
        help="No tokenizer file: the job tokenises the text with the Hugging Face teacher's own tokenizer",
    ),
]
LabelColumnOpt = Annotated[str | None, typer.Option(help="Label column of a table (default: label)")]
MaxLengthOpt = Annotated[int | None, typer.Option(help="Tokens per example (default 128)")]
ClassesOpt = Annotated[str | None, typer.Option(help="Comma-separated order of string labels")]
ExportOpt = Annotated[str, typer.Option(help="Comma-separated export formats")]
BaselineOpt = Annotated[bool, typer.Option("--baseline", metavar="", help="Also train the student without the teacher")]
GpusOpt = Annotated[
    int | None,
    typer.Option(help="GPUs the job trains on: 0 a CPU worker, N a worker with N GPUs (default: any worker)"),
]


def split(text: str | None) -> list[str] | None:
    """'a, b' -> ['a', 'b']; None stays None."""
    return None if text is None else [p.strip() for p in text.split(",") if p.strip()]


def checked_student(text: str) -> dict:
    """The student spec as the API will take it, or exit 2 with one line ('student: ...')."""
    try:
        adapter = TypeAdapter(StudentSpec)
        return adapter.dump_python(adapter.validate_python(parse_student(text)), mode="json", exclude_none=True)
    except (ValueError, ValidationError) as exc:
        raise fail(escape(validation_text(exc, "student")), 2) from None


def checked_export(text: str) -> list[str]:
    """The export formats, each one the API knows, or exit 2."""
    formats = split(text) or []
    try:
        JobCreate.model_validate({"teacher_id": "-", "train_dataset_id": "-", "export": formats})
    except ValidationError as exc:
        raise fail(escape(validation_text(exc, "--export")), 2) from None
    return formats


def checked_gpus(gpus: int | None) -> int | None:
    """The GPU count as the API will take it (0 to contract.resources.MAX_GPUS), or exit 2."""
    if gpus is not None:
        try:
            Resources.model_validate({"gpus": gpus})
        except ValidationError as exc:
            raise fail(escape(f"--gpus: {exc.errors()[0]['msg']}"), 2) from None
    return gpus


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


def _reused(upload) -> None:
    kind = "model" if upload.id.startswith("mdl_") else "dataset"
    err.print(f"reusing {kind} {upload.id} (same sha256)", highlight=False)


def upload_inputs(client: Distillery, files: list[tuple[str, Path]], dataset_fields: dict) -> list:
    """Upload (kind, path) pairs with byte bars and wait until the worker has validated them all."""
    uploads: list = []
    try:
        with byte_progress(err) as bars:
            for kind, path in files:
                task = bars.add_task(f"upload {path.name}", total=path.stat().st_size)

                def on_bytes(done: int, total: int, task=task) -> None:
                    bars.update(task, completed=done, total=total or None)

                if kind == "model":
                    uploads.append(client.upload_model(path, progress=on_bytes, on_reused=_reused))
                else:
                    uploads.append(client.upload_dataset(path, progress=on_bytes, on_reused=_reused, **dataset_fields))
        with err.status("validating uploads on the worker..."):
            ready = client.wait_ready(*uploads)
    except KeyboardInterrupt:
        _interrupted_uploads(uploads)
        raise typer.Exit(130) from None
    for item in ready:
        err.print(f"{item.id} {escape(item.name)}: {item.status} ({escape(item.format)})", highlight=False)
    return ready


@with_hyperparameter_options
@api_errors
def run(
    teacher: TeacherOpt,
    train: TrainOpt,
    out_dir: OutOpt,
    eval_: EvalOpt = None,
    student: StudentOpt = None,
    tokenizer: TokenizerOpt = None,
    tokenizer_from_teacher: TokenizerFromTeacherOpt = False,
    text_column: TextColumnOpt = None,
    label_column: LabelColumnOpt = None,
    max_length: MaxLengthOpt = None,
    classes: ClassesOpt = None,
    export: ExportOpt = "torchscript,safetensors",
    baseline: BaselineOpt = False,
    gpus: GpusOpt = None,
    force: Annotated[bool, ForceOpt] = False,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    **hyper_options: Any,
) -> None:
    """Upload a teacher and data, distil, follow the job live, and download the student and its report."""
    student_spec, hyper = checked_student(student) if student else None, hyperparameters(hyper_options)
    formats, gpus = checked_export(export), checked_gpus(gpus)
    check_out(out_dir, None, force)
    client = options.make_client(url, api_key)
    client.check_access()  # a wrong key or URL fails here, in one request, before a large upload
    files = [("model", teacher), ("dataset", train)] + ([("dataset", eval_)] if eval_ is not None else [])
    fields = {"tokenizer": tokenizer, "text_column": text_column, "label_column": label_column}
    if tokenizer_from_teacher:
        fields["tokenizer_from"] = "teacher"
    ready = upload_inputs(client, files, {**fields, "max_length": max_length, "classes": split(classes)})
    job = client.create_job(
        ready[0].id,
        ready[1].id,
        eval_dataset_id=ready[2].id if eval_ is not None else None,
        student=student_spec,
        hyperparameters=hyper or None,
        export=formats,
        baseline=baseline,
        gpus=gpus,
    )
    err.print(f"job [bold]{job.id}[/] {job.status}")
    job = follow(client, job.id)
    finish(client, job, out_dir, force=True)  # --out was checked before the uploads
