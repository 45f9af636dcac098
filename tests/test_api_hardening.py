"""The HTTP API against crafted input (issue 8, trust boundary): no upload, query or header value gives a 5xx,
errors name no server path, keys never reach the access log, and the HTML pages carry a strict CSP.

Most tests run the app in process (TestClient) on a migrated SQLite database; the access-log tests start the
real uvicorn, as `uvicorn app.main:app` and as `distillery api`, and read what it prints.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import re
import struct
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.logredact import RedactSecrets, redact
from app.models import Artifact, Job, JobEvent, new_id
from tests.support.rows import in_process_database
from tests.support.service import ROOT, free_port

JSONL_HINT = "one flat JSON object per line"
BIG = 10**20  # beyond SQL BIGINT: overflowed the SQLite driver (500)
MAX_INT = 2**63 - 1


def _report(**overrides) -> dict:
    report = {
        "job_id": "j",
        "device": "cpu",
        "train_seconds": 1.5,
        "eval_examples": 10,
        "classes": ["0", "1"],
        "teacher": {
            "accuracy": 0.9,
            "num_parameters": 100,
            "size_bytes": 4000,
            "latency_ms": {"batch_1": 0.2, "batch_64": 1.0},
        },
        "student": {
            "accuracy": 0.8,
            "agreement": 0.85,
            "num_parameters": 10,
            "size_bytes": 400,
            "latency_ms": {"batch_1": 0.05, "batch_64": 0.1},
        },
        "baseline": None,
        "compression_ratio": 10.0,
        "speedup": {"batch_1": 4.0, "batch_64": 10.0},
        "teacher_outputs_cache": "miss",
        "history": [
            {"epoch": 1, "train_loss": 1.0, "validation_accuracy": 0.7, "validation_agreement": 0.7},
            {"epoch": 2, "train_loss": 0.5, "validation_accuracy": 0.8, "validation_agreement": 0.8},
        ],
    }
    return report | overrides


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """(client, key, job id, data dir, sessionmaker): one tenant with a finished job that has 3 events."""
    from app.auth import create_key, tenant_for_key
    from app.main import create_app

    tmp = tmp_path_factory.mktemp("hardening")
    with pytest.MonkeyPatch.context() as mp, in_process_database(tmp, mp) as sessionmaker:
        with sessionmaker() as session:
            key = create_key(session, "hardening")
            tenant = tenant_for_key(session, key)
            job = Job(
                id=new_id("job"),
                tenant_id=tenant.id,
                teacher_id="mdl_x",
                train_dataset_id="dst_x",
                student={"architecture": "mlp"},
                hyperparameters={},
                export=[],
                status="succeeded",
                report=_report(),
            )
            session.add(job)
            session.commit()
            for i in range(3):
                session.add(JobEvent(job_id=job.id, type="status", message=f"event {i}"))
            session.commit()
            job_id = job.id
        client = TestClient(create_app(), raise_server_exceptions=False, headers={"Authorization": f"Bearer {key}"})
        yield client, key, job_id, tmp, sessionmaker


def _assert_error(resp: httpx.Response, status: int, code: str | None = None) -> str:
    """The response is the error envelope with this status; returns the message."""
    assert resp.status_code == status, resp.text[:2000]
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    if code:
        assert body["error"]["code"] == code, body
    return body["error"]["message"]


def _upload(client: TestClient, content: bytes, kind: str = "datasets", **fields) -> httpx.Response:
    return client.post(f"/v1/{kind}", files={"file": ("upload.bin", content)}, data=fields)


def _no_server_detail(message: str, data_dir: Path) -> None:
    assert str(data_dir) not in message and "/tmp" not in message and "upload-" not in message, message
    assert "Traceback" not in message and "Errno" not in message, message


# --- Uploaded content ------------------------------------------------------------------------------------

DEEP = 100_000


@pytest.mark.parametrize(
    "content",
    [
        b"[" * DEEP + b"]" * DEEP,
        b'{"a":' * DEEP + b"1" + b"}" * DEEP,
        b'{"text": "x", "label": ' + b"[" * DEEP + b"]" * DEEP + b"}\n{}\n",
    ],
    ids=["array", "object", "value"],
)
def test_a_jsonl_line_nested_100k_deep_is_a_422_that_says_what_to_fix(env, content):
    client, _key, _job, data_dir, _ = env
    message = _assert_error(_upload(client, content), 422, "invalid_dataset")
    assert JSONL_HINT in message
    _no_server_detail(message, data_dir)


@pytest.mark.parametrize(
    "content, expected",
    [
        (b'{"a": ' + b"9" * 5000 + b"}\n", "number too long"),
        (b'{"a": 1} [\n', "not a JSON object"),
        (b"x" * 300_000 + b",label\n1,2\n", "not a CSV header row"),
        (b'"' + b"a" * 200_000 + b'",label\n1,2\n', "not a CSV header row"),
    ],
    ids=["huge-integer", "extra-data", "long-csv-field", "long-quoted-csv-field"],
)
def test_crafted_first_lines_are_422(env, content, expected):
    client, _key, _job, data_dir, _ = env
    message = _assert_error(_upload(client, content), 422, "invalid_dataset")
    assert expected in message
    _no_server_detail(message, data_dir)


def test_a_csv_header_of_many_columns_is_named_briefly(env):
    client, *_ = env
    header = ",".join(f"column{i}" for i in range(5000)).encode() + b"\n1\n"
    message = _assert_error(_upload(client, header, label_column="label"), 422, "invalid_dataset")
    assert "(5000 in all)" in message and len(message) < 2000


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _zip(members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _flag_members(data: bytes, offsets: tuple[int, int], value: bytes) -> bytes:
    """Overwrite a field of every local (PK\\3\\4) and central (PK\\1\\2) header."""
    out = bytearray(data)
    for sig, offset in zip((b"PK\x03\x04", b"PK\x01\x02"), offsets, strict=True):
        i = out.find(sig)
        while i != -1:
            out[i + offset : i + offset + len(value)] = value
            i = out.find(sig, i + 4)
    return bytes(out)


def _bad_npy_header() -> bytes:
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (3,"  # unclosed: numpy's tokenizer fails
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


CRAFTED_ZIPS = {
    "truncated": _npz(x=np.zeros((4, 2)))[:60],
    "corrupt-directory": _npz(x=np.zeros((4, 2)))[:-10] + b"\xff" * 10,
    "bad-npy-header": _zip({"x.npy": _bad_npy_header()}),
    "encrypted": _flag_members(_npz(x=np.zeros((4, 2))), (6, 8), b"\x01\x00"),
    "unknown-compression": _flag_members(_npz(x=np.zeros((4, 2))), (8, 10), b"\x63\x00"),
    "bad-deflate": _flag_members(_npz(x=np.zeros((4, 2))), (8, 10), b"\x08\x00"),
    "many-arrays": _zip({f"a{i}.npy": b"" for i in range(1001)}),
    "image-not-image": _zip({"cat/1.png": b"GIF89a", "dog/2.png": b"GIF89a"}),
}


@pytest.mark.parametrize("name", sorted(CRAFTED_ZIPS))
def test_crafted_zips_are_422_without_server_details(env, name):
    client, _key, _job, data_dir, _ = env
    for kind in ("datasets", "models"):
        _no_server_detail(_assert_error(_upload(client, CRAFTED_ZIPS[name], kind=kind), 422), data_dir)


def test_a_multipart_boundary_over_256_bytes_is_422(env):
    client, *_ = env
    boundary = "b" * 300
    body = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nx\r\n--{boundary}--\r\n'
    resp = client.post(
        "/v1/datasets", content=body.encode(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    assert "multipart" in _assert_error(resp, 422)


def test_too_many_form_fields_is_422(env):
    client, *_ = env
    fields = {f"f{i}": "v" for i in range(100)}
    assert "fields" in _assert_error(_upload(client, b'{"a": 1}\n', **fields), 422)


@pytest.mark.parametrize("classes", ["[" * 30_000 + "]" * 30_000, "[" + "9" * 5000 + "]", '[["a"], ["b"]]'])
def test_crafted_classes_field_is_422(env, classes):
    client, *_ = env
    assert "classes" in _assert_error(_upload(client, b'{"a": 1}\n', classes=classes), 422)


# --- Integer query and header values -----------------------------------------------------------------------


@pytest.mark.parametrize("after", ["1e20", str(BIG), str(MAX_INT + 1), "-1", "abc"])
def test_events_after_out_of_range_is_422(env, after):
    client, _key, job_id, *_ = env
    message = _assert_error(client.get(f"/v1/jobs/{job_id}/events", params={"after": after}), 422, "invalid_request")
    assert "after" in message


def test_events_after_the_largest_id_is_an_empty_page(env):
    client, _key, job_id, *_ = env
    resp = client.get(f"/v1/jobs/{job_id}/events", params={"after": MAX_INT})
    assert resp.status_code == 200 and resp.json() == {"data": [], "next_after": None}


@pytest.mark.parametrize("accept", ["application/json", "text/event-stream"])
@pytest.mark.parametrize("last_event_id", [str(BIG).encode(), str(MAX_INT + 1).encode(), b"-5", b"abc", b"\xb2"])
def test_a_bad_last_event_id_is_422_before_any_stream(env, accept, last_event_id):
    client, _key, job_id, *_ = env
    with client.stream(
        "GET", f"/v1/jobs/{job_id}/events", headers={"Accept": accept, "Last-Event-ID": last_event_id}
    ) as resp:
        resp.read()
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    assert "last-event-id" in _assert_error(resp, 422, "invalid_request")


def test_sse_resumes_after_a_valid_last_event_id(env):
    client, _key, job_id, *_ = env
    with client.stream(
        "GET", f"/v1/jobs/{job_id}/events", headers={"Accept": "text/event-stream", "Last-Event-ID": "1"}
    ) as resp:
        text = resp.read().decode()
    assert resp.status_code == 200
    ids = [int(i) for i in re.findall(r"^id: (\d+)$", text, re.M)]
    assert ids and min(ids) > 1 and "event: end" in text


@pytest.mark.parametrize(
    "path",
    [
        "/v1/jobs?limit=0",
        "/v1/jobs?limit=101",
        f"/v1/jobs?limit={BIG}",
        "/v1/models?limit=1e20",
        f"/v1/datasets?after={'z' * 100}",
        "/v1/jobs/{job}/events?limit=1001",
        f"/v1/jobs/{{job}}/events?limit={BIG}",
    ],
)
def test_every_list_bounds_limit_and_after(env, path):
    client, _key, job_id, *_ = env
    _assert_error(client.get(path.replace("{job}", job_id)), 422, "invalid_request")


@pytest.mark.parametrize(
    "hyperparameters",
    [b'{"patience": 100000000000000000000}', b'{"dkd_alpha": Infinity}', b'{"grad_clip": 1e400}', b'{"dkd_beta": NaN}'],
)
def test_job_numbers_are_bounded_and_finite(env, hyperparameters):
    client, *_ = env
    body = b'{"teacher_id": "mdl_x", "train_dataset_id": "dst_x", "hyperparameters": ' + hyperparameters + b"}"
    _assert_error(client.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"}), 422)


def test_a_json_body_nested_100k_deep_is_a_4xx(env):
    client, *_ = env
    body = b'{"teacher_id": ' + b"[" * DEEP + b"]" * DEEP + b"}"
    resp = client.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
    assert 400 <= resp.status_code < 500 and set(resp.json()) == {"error"}, resp.text


def test_validation_messages_stay_short(env):
    client, *_ = env
    body = {"teacher_id": "m", "train_dataset_id": "d", **{f"unknown{i}": 1 for i in range(5000)}}
    message = _assert_error(client.post("/v1/jobs", json=body), 422, "invalid_request")
    assert "and 4990 more" in message and len(message) < 3000


# --- Messages that reach a user ------------------------------------------------------------------------------


def test_an_unexpected_error_answers_a_generic_500(env, caplog):
    from app.main import create_app

    _client, key, *_ = env
    app = create_app()

    def boom():
        raise RuntimeError("/srv/distillery/storage/ten_secret/file.npz: internal failure")

    app.add_api_route("/boom", boom)
    resp = TestClient(app, raise_server_exceptions=False).get("/boom")
    message = _assert_error(resp, 500, "internal")
    assert message == "internal server error"
    assert "/srv/distillery" in caplog.text  # the detail is logged for the operator, not sent


def test_a_missing_artifact_file_is_404_without_its_path(env):
    client, _key, job_id, data_dir, sessionmaker = env
    with sessionmaker() as session:
        session.add(
            Artifact(
                job_id=job_id,
                name="student.pt",
                format="torchscript",
                size_bytes=1,
                sha256="0" * 64,
                path="tenants/x/jobs/gone/student.pt",
            )
        )
        session.commit()
    message = _assert_error(client.get(f"/v1/jobs/{job_id}/artifacts/student.pt"), 404)
    assert "tenants/" not in message
    _no_server_detail(message, data_dir)


@pytest.mark.parametrize(
    "report",
    [
        _report(history=[{"epoch": 1, "train_loss": float("nan")}, {"epoch": 2, "train_loss": float("nan")}]),
        _report(history=[{"epoch": 1, "train_loss": float("inf")}, {"epoch": 2, "train_loss": 1.0}]),
        _report(history=[{"epoch": 10**30, "train_loss": 1.0}, {"epoch": float("nan"), "train_loss": 2.0}]),
        _report(teacher=[1, 2], speedup="fast", history="none"),
    ],
    ids=["all-nan-loss", "infinite-loss", "huge-epochs", "wrong-shapes"],
)
def test_report_html_of_any_stored_report_is_a_page(env, report):
    client, _key, finished_id, _dir, sessionmaker = env
    with sessionmaker() as session:
        tenant_id = session.get(Job, finished_id).tenant_id
        job = Job(
            id=new_id("job"),
            tenant_id=tenant_id,
            teacher_id="m",
            train_dataset_id="d",
            student={},
            hyperparameters={},
            export=[],
            status="succeeded",
            report=report,
        )
        session.add(job)
        session.commit()
        job_id = job.id
    # A daemon thread: the chart's tick loop once spun for ever on huge epochs, which must fail, not hang.
    result: list[httpx.Response] = []
    worker = threading.Thread(target=lambda: result.append(client.get(f"/v1/jobs/{job_id}/report.html")), daemon=True)
    worker.start()
    worker.join(60)
    assert result, "report.html did not answer within 60 s"
    resp = result[0]
    assert resp.status_code == 200 and "Distillation report" in resp.text, resp.text[:500]


# --- Content-Security-Policy -----------------------------------------------------------------------------------


def _csp(resp: httpx.Response) -> dict[str, list[str]]:
    header = resp.headers.get("content-security-policy")
    assert header, dict(resp.headers)
    return {part.split()[0]: part.split()[1:] for part in (p.strip() for p in header.split(";")) if part}


def test_the_dashboard_sends_a_strict_csp_that_allows_its_own_script(env):
    client, *_ = env
    resp = client.get("/")
    assert resp.status_code == 200
    csp = _csp(resp)
    assert csp["default-src"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'none'"] and csp["base-uri"] == ["'none'"]
    assert csp["connect-src"] == ["'self'"]
    scripts = re.findall(r"<script>(.*?)</script>", resp.text, re.S)
    assert scripts
    expected = [f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in scripts]
    assert csp["script-src"] == expected  # the inline script by hash: no 'unsafe-inline', no other source
    assert resp.headers["x-content-type-options"] == "nosniff"


def test_report_html_sends_a_csp_without_scripts(env):
    client, _key, job_id, *_ = env
    resp = client.get(f"/v1/jobs/{job_id}/report.html")
    assert resp.status_code == 200 and "<svg" in resp.text
    csp = _csp(resp)
    assert csp["default-src"] == ["'none'"] and "script-src" not in csp
    assert csp["frame-ancestors"] == ["'none'"] and "sandbox" in csp
    assert "<script" not in resp.text


# --- Keys never reach a log line -----------------------------------------------------------------------------------

KEY = "dk_" + "S3cr3tK3yV4lu3" * 3


def test_the_filter_redacts_uvicorns_access_record():
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", f"/?key={KEY}&x=1", "1.1", 200),
        None,
    )
    assert RedactSecrets().filter(record)
    line = record.getMessage()
    assert KEY not in line and "key=[redacted]&x=1" in line and record.args[4] == 200
    assert redact(f"Authorization: Bearer {KEY}") == "Authorization: Bearer [redacted]"
    assert KEY not in redact(f"/v1/jobs/{KEY}") and redact("/?monkey=1") == "/?monkey=1"
    try:
        raise ValueError(f"no job {KEY}")
    except ValueError:
        record = logging.LogRecord("app.errors", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    RedactSecrets().filter(record)
    assert "ValueError: no job dk_[redacted]" in logging.Formatter().format(record)


@pytest.mark.parametrize("how", ["uvicorn", "distillery api"])
def test_an_api_key_in_a_request_never_reaches_the_log(tmp_path, how):
    """The real server's output: access lines, and the traceback of a failing request (the database is not
    migrated, so a /v1 request fails with a 500 that is logged with the request's path)."""
    port = free_port()
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_")}
    env |= {"DISTILLERY_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    if how == "uvicorn":
        argv = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
    else:
        argv = [sys.executable, "-m", "distillery_cli", "api", "--data-dir", str(data_dir), "--port", str(port)]
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(url + "/healthz", timeout=2)
                    break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
                    time.sleep(0.2)
            assert httpx.get(f"{url}/?key={KEY}").status_code == 200
            httpx.get(f"{url}/?token={KEY}#/", headers={"Authorization": f"Bearer {KEY}"})
            httpx.get(f"{url}/v1/jobs/{KEY}", headers={"Authorization": f"Bearer {KEY}"})
            time.sleep(0.5)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    text = log.read_text()
    assert 'GET /?key=[redacted] HTTP/1.1" 200' in text, text  # the access log is on, the key is not in it
    assert "unhandled error in GET /v1/jobs/dk_[redacted]" in text and "Traceback" in text, text
    assert KEY not in text and KEY[:12] not in text, text
