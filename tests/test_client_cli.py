"""The Python client, the `distillery run`/`jobs`/`models`/`datasets` commands and the HTML report.

Fast tests use httpx.MockTransport and typer's CliRunner; the integration tests start one real embedded
service (API + worker on SQLite and the embedded broker) for the whole module and distil the digits fixture.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from contract.student_syntax import parse_student
from contract.wire import StudentSpec
from distillery_cli.cli import app as cli_app
from distillery_client import Distillery, DistilleryError
from distillery_client.sse import parse_sse
from htmlreport import fmt, render_report_html

ROOT = Path(__file__).resolve().parents[1]


# -- fast: no service --------------------------------------------------------------------------------------


def _accuracies(report: dict) -> list[float]:
    """Every accuracy-like number of a report: teacher, student, baseline, and each epoch of the history."""
    values = [
        report["teacher"].get("accuracy"),
        report["student"].get("accuracy"),
        report["student"].get("agreement"),
    ]
    if report.get("baseline"):
        values += [report["baseline"].get("accuracy"), report["baseline"].get("agreement")]
    for row in report.get("history") or []:
        values += [row.get("validation_accuracy"), row.get("validation_agreement")]
    return [v for v in values if v is not None]


def _sample_report(confusion: bool = True) -> dict:
    report = {
        "job_id": "job_x",
        "device": "cpu",
        "train_seconds": 3.25,
        "eval_examples": 450,
        "classes": [str(i) for i in range(3)],
        "teacher": {
            "accuracy": 0.9733333333333334,
            "num_parameters": 300000,
            "size_bytes": 1200000,
            "latency_ms": {"batch_1": 0.41, "batch_64": 2.1},
        },
        "student": {
            "accuracy": 0.9511111111111111,
            "agreement": 0.9622222222222222,
            "num_parameters": 2410,
            "size_bytes": 11800,
            "latency_ms": {"batch_1": 0.05, "batch_64": 0.2},
        },
        "baseline": {"accuracy": 0.9311, "agreement": 0.9244},
        "compression_ratio": 124.481,
        "speedup": {"batch_1": 8.2, "batch_64": 10.5},
        "teacher_outputs_cache": "miss",
        "history": [
            {
                "epoch": i,
                "train_loss": 1.0 / i,
                "validation_accuracy": 0.5 + i / 41,
                "validation_agreement": 0.5 + i / 47,
            }
            for i in range(1, 21)
        ],
    }
    if confusion:
        report["confusion"] = [[140, 2, 1], [0, 151, 3], [4, 0, 149]]
    return report


def test_report_html_is_self_contained_and_shows_the_report_numbers():
    report = _sample_report()
    job = {
        "id": "job_x",
        "status": "succeeded",
        "teacher_id": "mdl_t",
        "train_dataset_id": "dst_a",
        "eval_dataset_id": None,
        "student": {"architecture": "mlp", "hidden_sizes": [32]},
        "hyperparameters": {"epochs": 20, "temperature": 4.0},
        "export": ["torchscript"],
        "baseline": True,
    }
    artifacts = [{"name": "student.pt", "format": "torchscript", "size_bytes": 11800, "sha256": "ab" * 32}]
    page = render_report_html(report, job, artifacts)
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "no external assets"
    assert page.count("<polyline") >= 3  # loss, accuracy, agreement
    for value in _accuracies(report):
        assert fmt(value) in page, value
    assert "ab" * 32 in page and "mdl_t" in page and "hidden_sizes" in page
    assert "Student vs teacher on the eval set" in page and ">151<" in page
    # Without a confusion matrix (today's engine) the section is simply absent.
    assert "Student vs teacher on the eval set" not in render_report_html(_sample_report(confusion=False))
    # A report with no history still renders.
    assert "Distillation report" in render_report_html({**_sample_report(), "history": []})


def test_student_short_syntax_and_json_give_the_same_valid_spec():
    short = parse_student("mlp:hidden_sizes=[64,32],dropout=0.1")
    as_json = parse_student('{"architecture": "mlp", "hidden_sizes": [64, 32], "dropout": 0.1}')
    assert short == as_json == {"architecture": "mlp", "hidden_sizes": [64, 32], "dropout": 0.1}
    StudentSpec.model_validate(short)
    assert parse_student("lstm:hidden_dim=32") == {"architecture": "lstm", "hidden_dim": 32}


def test_run_refuses_a_bad_student_before_uploading(tmp_path):
    teacher = tmp_path / "t.pt"
    teacher.write_bytes(b"x")
    runner = CliRunner()
    result = runner.invoke(
        cli_app,
        [
            "run",
            "--teacher",
            str(teacher),
            "--train",
            str(teacher),
            "--out",
            str(tmp_path / "o"),
            "--student",
            "mlp:widths=[3]",
            "--url",
            "http://127.0.0.1:9",
        ],
    )
    assert result.exit_code == 2, result.output
    assert "widths" in result.output


def test_run_has_every_flag_of_distill():
    from worker.local import HYPERPARAMETERS

    runner = CliRunner()
    help_text = runner.invoke(cli_app, ["run", "--help"], env={"COLUMNS": "200"}).output
    for name in [
        *HYPERPARAMETERS,
        "tokenizer",
        "text_column",
        "label_column",
        "max_length",
        "eval",
        "export",
        "baseline",
        "augmentation",
        "classes",
    ]:
        assert "--" + name.replace("_", "-") in help_text, name
    assert "--data" in help_text


def test_api_errors_become_distillery_error_and_uploads_stream_with_progress(tmp_path):
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models" and request.method == "GET":  # the key check before the upload
            return httpx.Response(200, json={"data": [], "next_after": None})
        if request.url.path == "/v1/models":
            body = request.read()
            seen["size"] = len(body)
            seen["auth"] = request.headers["authorization"]
            return httpx.Response(422, json={"error": {"code": "invalid_model", "message": "not a model"}})
        return httpx.Response(404, json={"error": {"code": "not_found", "message": "no job with id 'j'"}})

    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(300_000))
    calls = []
    client = Distillery("http://test", "k_123", transport=httpx.MockTransport(handler))
    with pytest.raises(DistilleryError) as info:
        client.upload_model(path, progress=lambda done, total: calls.append((done, total)))
    assert (info.value.status, info.value.code, info.value.message) == (422, "invalid_model", "not a model")
    assert seen["auth"] == "Bearer k_123" and seen["size"] > 300_000
    assert len(calls) >= 4 and calls[-1] == (300_000, 300_000)  # read in 64 KiB chunks, never all at once
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    with pytest.raises(DistilleryError) as info:
        client.get_job("j")
    assert info.value.status == 404 and info.value.code == "not_found"


def test_client_reads_url_and_key_from_the_environment(monkeypatch):
    monkeypatch.setenv("DISTILLERY_URL", "http://example.invalid:1234/")
    monkeypatch.setenv("DISTILLERY_API_KEY", "k_env")
    client = Distillery()
    assert client.url == "http://example.invalid:1234"
    assert client.http.headers["authorization"] == "Bearer k_env"


def test_the_client_cli_and_report_never_import_torch():
    code = (
        "import sys, distillery_cli.cli, distillery_client, htmlreport, app.routes.reports, app.main; "
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_sse_parser_skips_comments_and_keeps_ids():
    lines = [
        ": keep-alive",
        "",
        "id: 7",
        "event: progress",
        'data: {"a": 1}',
        "",
        "event: end",
        "data: {}",
        "",
    ]
    assert list(parse_sse(lines)) == [("progress", 7, '{"a": 1}'), ("end", None, "{}")]


# -- integration: one embedded service for the module --------------------------------------------------------


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    from tests.support.service import running_service

    with running_service(tmp_path_factory.mktemp("client-svc")) as service:
        yield service


@pytest.fixture(scope="module")
def key(svc):
    return svc.new_key("cli")


@pytest.fixture(scope="module")
def digits_files(tmp_path_factory):
    from tests.support.digits import digits_arrays, train_digits_teacher, write_npz

    folder = tmp_path_factory.mktemp("digits")
    x_train, y_train, x_test, y_test = digits_arrays()
    return {
        "teacher": train_digits_teacher(folder),
        "train": write_npz(folder / "train.npz", x_train, y_train),
        "eval": write_npz(folder / "eval.npz", x_test, y_test),
    }


def _cli(svc, key, *args, timeout=600, **kwargs) -> subprocess.CompletedProcess:
    env = {**svc.env, "DISTILLERY_URL": svc.url, "DISTILLERY_API_KEY": key, "COLUMNS": "160"}
    return subprocess.run(
        [sys.executable, "-m", "distillery_cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


@pytest.fixture(scope="module")
def run_result(svc, key, digits_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "student"
    started = time.monotonic()
    result = _cli(
        svc,
        key,
        "run",
        "--teacher",
        str(digits_files["teacher"]),
        "--train",
        str(digits_files["train"]),
        "--eval",
        str(digits_files["eval"]),
        "--student",
        "mlp:hidden_sizes=[32]",
        "--epochs",
        "40",
        "--learning-rate",
        "0.005",
        "--out",
        str(out),
    )
    return result, out, time.monotonic() - started


def _spec(student) -> dict:
    """A job's student spec as a plain dict without nulls (the API's model, or a dict)."""
    values = student if isinstance(student, dict) else student.model_dump(mode="json")
    return {k: v for k, v in values.items() if v is not None}


def _job_id(result: subprocess.CompletedProcess) -> str:
    """The job id `distillery run` printed ('job job_... queued')."""
    match = re.search(r"\bjob (job_\w+)", result.stderr)
    assert match, result.stderr
    return match.group(1)


@pytest.mark.integration
@pytest.mark.slow
def test_distillery_run_produces_the_student_and_both_reports(run_result, svc, key):
    result, out, _ = run_result
    assert result.returncode == 0, result.stdout + result.stderr + svc.log_tail()
    for name in ("student.pt", "manifest.json", "report.json", "report.html", "student.safetensors"):
        assert (out / name).is_file(), (name, sorted(p.name for p in out.iterdir()))
    report = json.loads((out / "report.json").read_text())
    assert report["student"]["accuracy"] >= 0.9
    # Every file is its artifact byte for byte (report.json too: the artifact, not the API's copy with job_id);
    # nothing else is left in the folder (no .checkpoints/, no .part).
    artifacts = Distillery(svc.url, key).list_artifacts(_job_id(result))
    for art in artifacts:
        assert hashlib.sha256((out / art.name).read_bytes()).hexdigest() == art.sha256, art.name
    assert "report.json" in {a.name for a in artifacts}
    assert sorted(p.name for p in out.iterdir()) == sorted([a.name for a in artifacts] + ["report.html"])
    # The table names teacher and student and shows the student's accuracy.
    assert "teacher" in result.stdout and fmt(report["student"]["accuracy"]) in result.stdout
    # Live progress came from the event stream: phases and the training epochs.
    assert "phase" in result.stderr and "upload teacher.pt" in result.stderr
    assert "epoch 40/40" in result.stderr and "100%" in result.stderr  # the last line reads the end


@pytest.mark.integration
@pytest.mark.slow
def test_report_html_of_the_digits_job_has_curves_and_the_report_numbers(run_result, svc, key):
    result, out, _ = run_result
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    page = (out / "report.html").read_text()
    client = Distillery(svc.url, key)
    job_id = _job_id(result)
    assert client.report_json(job_id) == {**report, "job_id": job_id}  # the API fills in the job id
    assert client.report_html(job_id) == page  # the CLI saved the API's page as it is
    assert re.search(r"<polyline points=\"[\d.]+,[\d.]+ [\d.]+,[\d.]+", page), "per-epoch curves"
    assert len(report["history"]) == 40
    for value in _accuracies(report):
        assert fmt(value) in page, value
    for art in client.list_artifacts(job_id):
        assert art.sha256 in page
    assert "<script" not in page.lower()
    resp = httpx.get(f"{svc.url}/v1/jobs/{job_id}/report.html")
    assert resp.status_code == 401


@pytest.mark.integration
@pytest.mark.slow
def test_run_with_a_bad_teacher_exits_non_zero_with_the_api_message(svc, key, digits_files, tmp_path):
    bad = tmp_path / "teacher.pt"
    bad.write_text("this is not a model\n")
    result = _cli(
        svc,
        key,
        "run",
        "--teacher",
        str(bad),
        "--train",
        str(digits_files["train"]),
        "--student",
        "mlp:hidden_sizes=[32]",
        "--out",
        str(tmp_path / "out"),
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    resp = httpx.post(
        f"{svc.url}/v1/models",
        headers={"Authorization": f"Bearer {key}"},
        files={"file": ("teacher.pt", bad.read_bytes())},
    )
    assert resp.status_code == 422
    message = resp.json()["error"]["message"]
    assert " ".join(message.split()) in " ".join(result.stderr.split()), result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
@pytest.mark.slow
def test_list_commands_print_json(run_result, svc, key, tmp_path):
    result, out, _ = run_result
    assert result.returncode == 0, result.stderr
    job_id = _job_id(result)
    jobs = json.loads(_cli(svc, key, "jobs", "list", "--json").stdout)
    job = next(j for j in jobs if j["id"] == job_id)
    assert job["status"] == "succeeded"
    assert job["student"] == {"architecture": "mlp", "hidden_sizes": [32]}  # from the short syntax
    assert json.loads(_cli(svc, key, "jobs", "show", job_id, "--json").stdout)["id"] == job_id
    models = json.loads(_cli(svc, key, "models", "list", "--json").stdout)
    datasets = json.loads(_cli(svc, key, "datasets", "list", "--json").stdout)
    assert job["teacher_id"] in {m["id"] for m in models}
    assert job["train_dataset_id"] in {d["id"] for d in datasets}
    events = json.loads(_cli(svc, key, "jobs", "events", job_id, "--json").stdout)
    assert events and events[-1]["type"] == "status"
    again = _cli(svc, key, "jobs", "cancel", job_id)
    assert again.returncode == 1 and "409" in again.stderr
    missing = _cli(svc, key, "jobs", "show", "job_nope")
    assert missing.returncode == 1 and "404" in missing.stderr
    client = Distillery(svc.url, key)
    path = client.download_artifact(job_id, "manifest.json", str(tmp_path / "dl") + "/")
    assert path == tmp_path / "dl" / "manifest.json" and path.read_bytes() == (out / "manifest.json").read_bytes()
    assert (
        client.report(job_id).student["accuracy"]
        == json.loads((out / "report.json").read_text())["student"]["accuracy"]
    )
    text = _cli(svc, key, "jobs", "list")
    assert text.returncode == 0 and job_id in text.stdout


class _CutStream(httpx.SyncByteStream):
    """A response body that drops the connection after `limit` bytes (possibly in the middle of an event)."""

    def __init__(self, inner: httpx.SyncByteStream, limit: int):
        self.inner, self.limit = inner, limit

    def __iter__(self):
        sent = 0
        for chunk in self.inner:
            if sent + len(chunk) >= self.limit:
                yield chunk[: self.limit - sent]
                raise httpx.ReadError("connection dropped by the test")
            sent += len(chunk)
            yield chunk

    def close(self) -> None:
        self.inner.close()


class _FlakyTransport(httpx.BaseTransport):
    """Cuts the first `cuts` event streams after `limit` bytes; records each stream's Last-Event-ID."""

    def __init__(self, cuts: int, limit: int):
        self.inner = httpx.HTTPTransport()
        self.cuts, self.limit, self.last_ids = cuts, limit, []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if "text/event-stream" not in request.headers.get("accept", ""):
            return response
        self.last_ids.append(request.headers.get("last-event-id"))
        if len(self.last_ids) > self.cuts:
            return response
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_CutStream(response.stream, self.limit),
            request=request,
        )

    def close(self) -> None:
        self.inner.close()


@pytest.mark.integration
@pytest.mark.slow
def test_live_events_of_a_running_job_resume_with_last_event_id_and_miss_none(svc, key, digits_files):
    client = Distillery(svc.url, key)
    teacher = client.upload_model(digits_files["teacher"])
    train = client.upload_dataset(digits_files["train"])
    eval_ = client.upload_dataset(digits_files["eval"])
    client.wait_ready(teacher, train, eval_)
    job = client.create_job(
        teacher.id,
        train.id,
        eval_dataset_id=eval_.id,
        student='{"architecture": "mlp", "hidden_sizes": [16]}',  # the JSON form
        hyperparameters={"epochs": 40, "batch_size": 16},
        baseline=True,
    )
    assert _spec(job.student) == {"architecture": "mlp", "hidden_sizes": [16]}

    # 1. Read live until training has started, then drop the connection while the job runs.
    received = []
    stream = client.events(job.id)
    for event in stream:
        received.append(event)
        if event.type == "progress":
            break
    stream.close()  # closes the HTTP response: the server sees the client go away
    assert client.get_job(job.id).status == "running"
    with pytest.raises(DistilleryError) as info:
        client.report_html(job.id)
    assert (info.value.status, info.value.code) == (404, "report_not_ready")

    # 2. Resume after the last id through a connection that drops three times, once mid-event.
    flaky = _FlakyTransport(cuts=3, limit=700)
    resumed = Distillery(svc.url, key, transport=flaky)
    dropped_at = received[-1].id
    for event in resumed.events(job.id, after=dropped_at, retry_delay=0.05):
        received.append(event)
    final = client.get_job(job.id)
    assert final.status == "succeeded", final
    assert flaky.last_ids[0] == str(dropped_at)
    assert len(flaky.last_ids) >= 4, flaky.last_ids  # three drops, three reconnections
    assert all(last is not None for last in flaky.last_ids)

    ids = [e.id for e in received]
    recorded = [e.id for e in client.list_events(job.id)]
    assert len(ids) == len(set(ids)), "no duplicates"
    assert ids == sorted(ids) and ids == recorded, "none missed, in order"
    assert received[-1].type == "status" and received[-1].data["status"] == "succeeded"

    # The baseline is in the report and on the page.
    report = client.report_json(job.id)
    assert report["baseline"] and report["baseline"]["accuracy"] is not None
    page = client.report_html(job.id)
    for value in _accuracies(report):
        assert fmt(value) in page


@pytest.mark.integration
@pytest.mark.slow
def test_wait_follows_the_stream_and_ctrl_c_can_cancel_the_job(svc, key, digits_files, tmp_path):
    env = {**svc.env, "DISTILLERY_URL": svc.url, "DISTILLERY_API_KEY": key}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distillery_cli",
            "run",
            "--teacher",
            str(digits_files["teacher"]),
            "--train",
            str(digits_files["train"]),
            "--student",
            "mlp:hidden_sizes=[8]",
            "--epochs",
            "200",
            "--out",
            str(tmp_path / "out"),
        ],
        env=env,
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    client = Distillery(svc.url, key)
    deadline = time.monotonic() + 120
    job = None
    while time.monotonic() < deadline and job is None:
        running = client.list_jobs(status="running", limit=5) + client.list_jobs(status="queued", limit=5)
        job = next((j for j in running if _spec(j.student) == {"architecture": "mlp", "hidden_sizes": [8]}), None)
        time.sleep(0.3)
    assert job is not None, proc.stderr.read() if proc.poll() is not None else "no job"
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(input="y\n", timeout=60)
    assert proc.returncode == 130, stderr
    assert "Cancel job" in stderr
    deadline = time.monotonic() + 60
    while client.get_job(job.id).status not in ("cancelled", "failed", "succeeded") and time.monotonic() < deadline:
        time.sleep(0.3)
    assert client.get_job(job.id).status == "cancelled"

    # The cancelled job: watch says so plainly; download fetches the salvaged checkpoint when the job had one.
    watch = _cli(svc, key, "jobs", "watch", job.id, timeout=120)
    assert watch.returncode == 1 and "cancelled (by request)" in watch.stderr, watch.stderr
    assert "no error recorded" not in watch.stderr
    dest = tmp_path / "salvage"
    download = _cli(svc, key, "jobs", "download", job.id, "--out", str(dest), timeout=120)
    assert "no report yet" not in download.stderr
    artifacts = {a.name: a.sha256 for a in client.list_artifacts(job.id)}
    if "checkpoint_student.safetensors" in artifacts:
        assert download.returncode == 0, download.stderr
        text = " ".join(download.stderr.split())
        assert "the job was cancelled; its last checkpoint's student weights were saved to" in text, text
        assert sorted(p.name for p in dest.iterdir()) == sorted(artifacts)
        for name, sha in artifacts.items():
            assert hashlib.sha256((dest / name).read_bytes()).hexdigest() == sha, name
    else:  # cancelled before its first checkpoint
        assert download.returncode == 1 and "before its first checkpoint" in download.stderr, download.stderr
