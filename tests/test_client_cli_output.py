"""`distillery run` / `jobs` / `models` / `datasets` output, through the real command (typer's CliRunner) against a
mocked API (httpx.MockTransport): cancelled jobs and their salvage, the progress line at 80 columns, the uploads
tables, ratios, validation messages, Ctrl-C before the job, and what --out may hold.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from distillery_cli import downloads, job_commands, options, upload_commands
from distillery_cli.cli import app as cli_app
from distillery_cli.progress import JobProgress
from distillery_cli.tables import report_table
from distillery_client import Distillery, Event

NOW = "2026-11-30T12:00:00Z"


def _job(job_id: str, status: str, error: dict | None = None) -> dict:
    return {
        "id": job_id,
        "status": status,
        "phase": None,
        "attempt": 1,
        "teacher_id": "mdl_t",
        "train_dataset_id": "dst_a",
        "eval_dataset_id": None,
        "student": {"architecture": "mlp", "hidden_sizes": [32]},
        "hyperparameters": {"epochs": 20},
        "export": ["safetensors"],
        "baseline": False,
        "progress": {"epoch": 20, "epochs": 20, "step": 100, "total_steps": 100, "fraction": 1.0},
        "metrics": {"train_loss": 0.1, "validation_accuracy": 0.9, "validation_agreement": 0.95},
        "error": error,
        "created_at": NOW,
        "started_at": NOW,
        "finished_at": NOW,
    }


class FakeService:
    """The few routes the CLI reads, for jobs whose artifacts are given as {name: bytes}."""

    def __init__(self):
        self.jobs: dict[str, dict] = {}
        self.files: dict[str, dict[str, bytes]] = {}
        self.listed_sha: dict[tuple[str, str], str] = {}  # override an artifact's sha256 in the list
        self.reports: dict[str, dict] = {}
        self.uploads: list[dict] = []
        self.interrupt_on: str | None = None  # a path prefix whose request raises KeyboardInterrupt

    def add_job(self, job_id: str, status: str, files: dict[str, bytes], report: dict | None = None) -> None:
        self.jobs[job_id] = _job(job_id, status)
        self.files[job_id] = files
        if report is not None:
            self.reports[job_id] = report

    def _upload(self, kind: str) -> dict:
        prefix = "mdl" if kind == "models" else "dst"
        row = {
            "id": f"{prefix}_{len(self.uploads) + 1:04d}",
            "name": "f",
            "format": "npz",
            "status": "validating",
            "size_bytes": 3,
            "sha256": "0" * 64,
            "created_at": NOW,
            "error": None,
            "info": None,
        }
        self.uploads.append(row)
        return row

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if self.interrupt_on and path.startswith(self.interrupt_on) and request.method in ("GET", "POST"):
            raise KeyboardInterrupt
        if request.method == "POST" and path in ("/v1/models", "/v1/datasets"):
            request.read()
            return httpx.Response(201, json=self._upload(path.rsplit("/", 1)[1]))
        if request.method == "GET" and path in ("/v1/models", "/v1/datasets"):  # the CLI's key check
            return httpx.Response(200, json={"data": [], "next_after": None})
        parts = path.strip("/").split("/")
        if parts[:2] == ["v1", "jobs"] and len(parts) >= 3:
            job_id = parts[2]
            if job_id not in self.jobs:
                return httpx.Response(404, json={"error": {"code": "not_found", "message": "no job"}})
            files = self.files[job_id]
            if len(parts) == 3:
                return httpx.Response(200, json=self.jobs[job_id])
            if parts[3] == "artifacts" and len(parts) == 4:
                data = [
                    {
                        "name": name,
                        "format": "file",
                        "size_bytes": len(body),
                        "sha256": self.listed_sha.get((job_id, name), hashlib.sha256(body).hexdigest()),
                    }
                    for name, body in sorted(files.items())
                ]
                return httpx.Response(200, json={"data": data})
            if parts[3] == "artifacts":
                return httpx.Response(200, content=files[parts[4]])
            if parts[3] == "report":
                if job_id not in self.reports:
                    status = self.jobs[job_id]["status"]
                    message = f"job {job_id} has no report yet (status {status})"
                    return httpx.Response(404, json={"error": {"code": "report_not_ready", "message": message}})
                return httpx.Response(200, json={"job_id": job_id, **self.reports[job_id]})
            if parts[3] == "report.html":
                return httpx.Response(200, text=f"<!DOCTYPE html><title>Distillery report {job_id}</title>")
        return httpx.Response(404, json={"error": {"code": "not_found", "message": f"no route {path}"}})


@pytest.fixture
def fake(monkeypatch):
    service = FakeService()
    monkeypatch.setattr(
        options,
        "make_client",
        lambda url, key: Distillery("http://fake", "k", transport=httpx.MockTransport(service.handler)),
    )
    for module in (downloads, job_commands, upload_commands):
        monkeypatch.setattr(module, "out", Console(width=250))
    return service


def _invoke(*args: str):
    return CliRunner().invoke(cli_app, list(args), env={"COLUMNS": "250"})


SALVAGE = {"checkpoint_student.safetensors": b"\x08\x00weights", "checkpoint_student.json": b'{"epoch": 3}\n'}
REPORT = {"teacher": {"accuracy": 0.9}, "student": {"accuracy": 0.8}, "compression_ratio": 86.563}


# -- (7) cancelled jobs ------------------------------------------------------------------------------------------


def test_download_of_a_cancelled_job_saves_its_salvage_and_says_so(fake, tmp_path):
    fake.add_job("job_c", "cancelled", SALVAGE)
    out = tmp_path / "out"
    result = _invoke("jobs", "download", "job_c", "--out", str(out))
    assert result.exit_code == 0, result.output
    for name, body in SALVAGE.items():
        assert (out / name).read_bytes() == body
    text = " ".join(result.stderr.split())
    assert "the job was cancelled; its last checkpoint's student weights were saved to" in text
    assert str(out / "checkpoint_student.safetensors") in text
    assert "no report yet" not in result.output
    assert not (out / "report.json").exists() and not (out / "report.html").exists()


def test_download_of_a_cancelled_job_without_a_checkpoint_says_nothing_was_saved(fake, tmp_path):
    fake.add_job("job_n", "cancelled", {})
    result = _invoke("jobs", "download", "job_n", "--out", str(tmp_path / "out"))
    assert result.exit_code == 1
    assert "cancelled (by request) before its first checkpoint" in " ".join(result.stderr.split())
    assert "yet" not in result.output


def test_watch_of_a_cancelled_job_says_it_was_cancelled_by_request(fake, tmp_path):
    fake.add_job("job_c", "cancelled", SALVAGE)
    result = _invoke("jobs", "watch", "job_c")
    assert result.exit_code == 1
    assert "cancelled (by request)" in result.stderr
    assert "no error recorded" not in result.output
    assert "distillery jobs download job_c" in result.stderr  # where the salvage is
    result = _invoke("jobs", "watch", "job_c", "--out", str(tmp_path / "w"))
    assert (tmp_path / "w" / "checkpoint_student.safetensors").read_bytes() == SALVAGE["checkpoint_student.safetensors"]
    assert "weights were saved to" in " ".join(result.stderr.split())


# -- (8) terminal output -----------------------------------------------------------------------------------------


def _event(i: int, type_: str, message: str, data: dict | None) -> Event:
    return Event.model_validate(
        {"id": i, "type": type_, "level": "info", "message": message, "data": data, "created_at": NOW}
    )


def _progress_lines(events: list[Event], width: int = 80) -> list[str]:
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=False, color_system=None)
    with JobProgress(console) as view:
        for event in events:
            view(event)
    return [line for line in buffer.getvalue().splitlines() if line.strip()]


def _training(epochs: int, upto: int) -> list[Event]:
    events = [
        _event(1, "status", "job running", {"status": "running"}),
        _event(2, "phase", "training", {"phase": "training"}),
    ]
    for epoch in range(1, upto + 1):
        data = {"epoch": epoch, "epochs": epochs, "step": epoch * 250, "total_steps": epochs * 250}
        events.append(_event(len(events) + 1, "progress", "p", {**data, "fraction": (epoch - 0.5) / epochs}))
        events.append(
            _event(
                len(events) + 1,
                "metrics",
                "m",
                {"epoch": epoch, "train_loss": 0.123456, "validation_accuracy": 0.9, "validation_agreement": 0.95},
            )
        )
    return events


def test_the_progress_line_keeps_percent_and_eta_at_80_columns():
    lines = _progress_lines(_training(20, 10))
    last = lines[-1]
    assert all(len(line) <= 80 for line in lines), lines
    assert re.search(r"\b\d+%", last), last
    assert "ETA" in last, last
    assert "epoch 10/20" in last, last


def test_the_last_progress_line_of_a_20_epoch_job_reads_20_of_20():
    # Progress events are throttled: the last one the CLI sees is epoch 19's, then the metrics and the end.
    events = _training(20, 19)
    events.append(_event(99, "metrics", "m", {"epoch": 20, "train_loss": 0.1, "validation_agreement": 0.96}))
    events.append(_event(100, "status", "job succeeded", {"status": "succeeded"}))
    last = _progress_lines(events)[-1]
    assert "epoch 20/20" in last and "100%" in last, last


def test_models_and_datasets_list_print_a_short_summary_of_the_info(fake, monkeypatch):
    rows = {
        "/v1/datasets": {
            "format": "npz",
            "rows": 1437,
            "columns": None,
            "input": {"shape": [64], "dtype": "float32"},
            "has_labels": True,
            "num_classes": 10,
            "classes": None,
        },
        "/v1/models": {"format": "torchscript", "num_parameters": 19210, "input": None, "num_classes": 10},
    }

    def handler(request: httpx.Request) -> httpx.Response:
        row = {
            "id": "x_1",
            "name": "a",
            "format": "npz",
            "status": "ready",
            "size_bytes": 10,
            "sha256": "0" * 64,
            "created_at": NOW,
            "error": None,
            "info": rows[request.url.path],
        }
        return httpx.Response(200, json={"data": [row], "has_more": False, "next_after": None})

    monkeypatch.setattr(
        options, "make_client", lambda url, key: Distillery("http://fake", "k", transport=httpx.MockTransport(handler))
    )
    datasets = _invoke("datasets", "list")
    assert datasets.exit_code == 0, datasets.output
    assert "npz · input 64 · 10 classes · 1,437 rows" in datasets.stdout
    models = _invoke("models", "list")
    assert "torchscript · 19,210 parameters · 10 classes" in models.stdout
    assert "{" not in datasets.stdout + models.stdout


def test_ratios_print_with_one_decimal():
    report = {**REPORT, "speedup": {"batch_1": 10.5}, "teacher": {"latency_ms": {"batch_1": 2.0}}}
    buffer = io.StringIO()
    Console(file=buffer, width=200, color_system=None).print(report_table(report))
    text = buffer.getvalue()
    assert "86.6×" in text and "10.5×" in text, text
    assert "86.56" not in text and "10.50" not in text


def test_validation_errors_carry_no_pydantic_wording(tmp_path):
    teacher = tmp_path / "t.pt"
    teacher.write_bytes(b"x")
    common = ["run", "--teacher", str(teacher), "--train", str(teacher), "--out", str(tmp_path / "o")]
    result = _invoke(*common, "--student", '{"architecture": "zzz"}', "--url", "http://127.0.0.1:9")
    assert result.exit_code == 2
    text = " ".join(result.stderr.split())
    assert "student: architecture must be one of" in text, text
    assert "Value error" not in text and "value:" not in text
    result = _invoke(*common, "--epochs", "0", "--url", "http://127.0.0.1:9")
    assert result.exit_code == 2 and "--epochs: " in result.stderr, result.output


def test_run_help_shows_baseline_as_a_flag():
    help_text = CliRunner().invoke(cli_app, ["run", "--help"], env={"COLUMNS": "200"}).output
    line = next(line for line in help_text.splitlines() if "--baseline" in line)
    assert "<bool>" not in line and "BOOLEAN" not in line, line


def _run_args(tmp_path: Path) -> list[str]:
    teacher = tmp_path / "teacher.pt"
    teacher.write_bytes(b"abc")
    return [
        "run",
        "--teacher",
        str(teacher),
        "--train",
        str(teacher),
        "--eval",
        str(teacher),
        "--out",
        str(tmp_path / "out"),
    ]


def test_ctrl_c_during_upload_names_what_was_left_and_how_to_delete_it(fake, tmp_path):
    fake.interrupt_on = "/v1/datasets"  # the teacher is up, the training data is being sent
    result = _invoke(*_run_args(tmp_path))
    assert result.exit_code == 130, result.output
    text = " ".join(result.stderr.split())
    assert "mdl_0001" in text and "distillery models delete mdl_0001" in text, text
    assert "datasets delete" not in text


def test_ctrl_c_during_validation_names_every_upload(fake, tmp_path):
    fake.interrupt_on = "/v1/models/"  # wait_ready polls the model first
    result = _invoke(*_run_args(tmp_path))
    assert result.exit_code == 130, result.output
    text = " ".join(result.stderr.split())
    assert "mdl_0001" in text and "dst_0002" in text and "dst_0003" in text, text
    assert "distillery models delete mdl_0001" in text and "distillery datasets delete dst_0002 dst_0003" in text


# -- (9) output folders ------------------------------------------------------------------------------------------


def _succeeded(fake: FakeService, job_id: str, accuracy: float = 0.8) -> dict[str, bytes]:
    report = {**REPORT, "student": {"accuracy": accuracy}}
    files = {
        "student.safetensors": f"weights of {job_id}".encode(),
        "manifest.json": json.dumps({"files": ["student.safetensors"], "seed": job_id}).encode(),
        "report.json": json.dumps(report, indent=2).encode(),  # the artifact has no job_id; the API adds it
    }
    fake.add_job(job_id, "succeeded", files, report)
    return files


def test_downloaded_files_are_the_artifacts_byte_for_byte(fake, tmp_path):
    files = _succeeded(fake, "job_a")
    out = tmp_path / "out"
    result = _invoke("jobs", "download", "job_a", "--out", str(out))
    assert result.exit_code == 0, result.output
    for name, body in files.items():
        assert (out / name).read_bytes() == body, name
    assert (out / "report.html").is_file()
    assert sorted(p.name for p in out.iterdir()) == sorted([*files, "report.html"])  # no .part, no .checkpoints
    # Downloading the same job again into its own folder needs no --force.
    again = _invoke("jobs", "download", "job_a", "--out", str(out))
    assert again.exit_code == 0, again.output


def test_a_file_whose_sha256_differs_from_the_artifact_list_is_refused(fake, tmp_path):
    _succeeded(fake, "job_a")
    fake.listed_sha[("job_a", "student.safetensors")] = "f" * 64
    out = tmp_path / "out"
    result = _invoke("jobs", "download", "job_a", "--out", str(out))
    assert result.exit_code == 1
    assert "sha256" in result.stderr
    assert not (out / "student.safetensors").exists()


def test_out_holding_another_jobs_files_is_refused_unless_force(fake, tmp_path):
    old = _succeeded(fake, "job_old", accuracy=0.5)
    new = _succeeded(fake, "job_new", accuracy=0.9)
    out = tmp_path / "out"
    assert _invoke("jobs", "download", "job_old", "--out", str(out)).exit_code == 0
    refused = _invoke("jobs", "download", "job_new", "--out", str(out))
    assert refused.exit_code == 2, refused.output
    assert "--force" in refused.stderr and "manifest.json" in refused.stderr
    assert (out / "report.json").read_bytes() == old["report.json"]  # untouched
    forced = _invoke("jobs", "download", "job_new", "--out", str(out), "--force")
    assert forced.exit_code == 0, forced.output
    assert (out / "report.json").read_bytes() == new["report.json"]
    # Unrelated files count too.
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert _invoke("jobs", "download", "job_new", "--out", str(other)).exit_code == 2
    assert _invoke("jobs", "watch", "job_new", "--out", str(other)).exit_code == 2


def test_run_refuses_a_non_empty_out_before_uploading(fake, tmp_path):
    args = _run_args(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.json").write_text("{}")
    result = _invoke(*args)
    assert result.exit_code == 2, result.output
    assert "--force" in result.stderr
    assert fake.uploads == []


def test_the_uploads_table_shows_an_invalid_uploads_message():
    """An invalid upload's error arrives as the contract's ErrorDetail: its message is the row's note."""
    from io import StringIO

    from rich.console import Console

    from contract.wire import ModelPublic
    from distillery_cli.tables import uploads_table

    row = ModelPublic.model_validate(
        {
            "id": "mdl_1",
            "name": "teacher.pt",
            "format": "torchscript",
            "status": "invalid",
            "size_bytes": 10,
            "sha256": "0" * 64,
            "created_at": "2026-11-30T00:00:00Z",
            "error": {"code": "invalid_model", "message": "not a TorchScript archive"},
        }
    )
    out = StringIO()
    Console(file=out, width=200).print(uploads_table([row]))
    assert "not a TorchScript archive" in out.getvalue()
