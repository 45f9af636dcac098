"""Webhooks (Standard Webhooks): signed deliveries from a real service to a local receiver, retries with
backoff recorded as events, secret rotation, and refused private targets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from app.webhooks import (
    WebhookTargetError,
    WebhookVerificationError,
    check_target,
    new_secret,
    signed_headers,
    verify_webhook,
)
from tests.support.digits import digits_arrays, train_digits_teacher, write_npz
from tests.support.service import ROOT, Client, free_port, running_service


class Receiver:
    """A small HTTP server on 127.0.0.1 that answers `fail_first` requests with 500, then 200."""

    def __init__(self, fail_first: int = 0):
        self.fail_first = fail_first
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    receiver.requests.append(
                        {"path": self.path, "headers": dict(self.headers.items()), "body": body, "at": time.monotonic()}
                    )
                    status = 500 if len(receiver.requests) <= receiver.fail_first else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, count: int, timeout: float = 60) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= count:
                    return list(self.requests)
            time.sleep(0.1)
        raise AssertionError(f"expected {count} deliveries, got {len(self.requests)}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    env = {
        "DISTILLERY_WEBHOOK_ALLOW_PRIVATE": "true",
        "DISTILLERY_WEBHOOK_RETRY_BASE_S": "0.3",
        "DISTILLERY_WEBHOOK_MAX_ATTEMPTS": "4",
    }
    with running_service(tmp_path_factory.mktemp("webhooks"), extra_env=env) as service:
        yield service


@pytest.fixture(scope="module")
def client(svc) -> Client:
    return Client(svc.url, svc.new_key("hooks"))


@pytest.fixture(scope="module")
def inputs(client, tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("files")
    x_train, y_train, x_test, y_test = digits_arrays()
    teacher = client.ready_upload("models", train_digits_teacher(d))
    train = client.ready_upload("datasets", write_npz(d / "train.npz", x_train, y_train))
    eval_ = client.ready_upload("datasets", write_npz(d / "eval.npz", x_test, y_test))
    return {"teacher_id": teacher["id"], "train_dataset_id": train["id"], "eval_dataset_id": eval_["id"]}


def _webhook_events(client: Client, job_id: str, count: int, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        page = client.http.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000}).json()
        events = [e for e in page["data"] if e["type"] == "webhook"]
        if len(events) >= count:
            return events
        time.sleep(0.2)
    raise AssertionError(f"expected {count} webhook events, got {events}")


def test_succeeded_job_is_delivered_signed_after_two_failures(client, inputs):
    receiver = Receiver(fail_first=2)
    try:
        resp = client.http.post(
            "/v1/jobs", json={**inputs, "hyperparameters": {"epochs": 1}, "webhook_url": receiver.url}
        )
        assert resp.status_code == 201, resp.text
        assert resp.json()["webhook_url"] == receiver.url
        job = client.wait_job(resp.json()["id"])
        assert job["status"] == "succeeded", job
        deliveries = receiver.wait(3)
    finally:
        receiver.close()
    secret = client.http.get("/v1/webhooks/secret").json()["secret"]
    assert secret.startswith("whsec_")

    # Every attempt carries the same webhook-id and a valid signature; the third one was answered 200.
    assert len({d["headers"]["webhook-id"] for d in deliveries}) == 1
    for delivery in deliveries:
        payload = verify_webhook(secret, delivery["headers"], delivery["body"])
        assert payload["type"] == "job.succeeded"
        assert payload["data"]["id"] == job["id"] and payload["data"]["status"] == "succeeded"
    third = deliveries[2]
    assert third["path"] == "/hook"
    assert third["headers"]["webhook-signature"].startswith("v1,")
    # Backoff: the second retry waited longer than the first (0.3 s, then 0.6 s).
    gaps = [b["at"] - a["at"] for a, b in zip(deliveries, deliveries[1:], strict=False)]
    assert gaps[0] >= 0.25 and gaps[1] >= 0.5, gaps

    # A wrong secret, a tampered body or a replayed (old) timestamp fail verification.
    with pytest.raises(WebhookVerificationError):
        verify_webhook(new_secret(), third["headers"], third["body"])
    with pytest.raises(WebhookVerificationError):
        verify_webhook(secret, third["headers"], third["body"].replace(b"succeeded", b"failed"))
    with pytest.raises(WebhookVerificationError):
        verify_webhook(secret, third["headers"], third["body"], now=time.time() + 3600)

    # Each attempt is an event of the job.
    events = _webhook_events(client, job["id"], 3)
    assert [(e["data"]["attempt"], e["data"]["status_code"], e["data"]["delivered"]) for e in events] == [
        (1, 500, False),
        (2, 500, False),
        (3, 200, True),
    ]
    assert events[0]["level"] == "warning" and events[2]["level"] == "info"


def test_a_retry_lost_with_its_worker_is_sent_again(backend, tmp_path):
    """The first attempt fails; the worker holding the retry (a 20 s countdown) is killed; the reaper of a new
    worker sends the delivery again once it is overdue, and it arrives, numbered as the second attempt."""
    env = {
        "DISTILLERY_WEBHOOK_ALLOW_PRIVATE": "true",
        "DISTILLERY_WEBHOOK_RETRY_BASE_S": "20",
        "DISTILLERY_RESEND_AFTER_S": "3",
        "DISTILLERY_REAPER_INTERVAL_S": "1",
    }
    receiver = Receiver(fail_first=1)
    try:
        with running_service(tmp_path, extra_env=env, **backend) as svc:
            client = Client(svc.url, svc.new_key("hooks"))
            x_train, y_train, _, _ = digits_arrays()
            teacher = client.ready_upload("models", train_digits_teacher(tmp_path))
            train = client.ready_upload("datasets", write_npz(tmp_path / "train.npz", x_train, y_train))
            body = {
                "teacher_id": teacher["id"],
                "train_dataset_id": train["id"],
                "hyperparameters": {"epochs": 1},
                "webhook_url": receiver.url,
            }
            job = client.wait_job(client.http.post("/v1/jobs", json=body).json()["id"])
            assert job["status"] == "succeeded", job
            first = _webhook_events(client, job["id"], 1)[0]
            assert first["data"]["attempt"] == 1 and first["data"]["retry_in_s"] == 20
            svc.kill_worker("w0")  # the pending retry goes with it
            started = time.monotonic()
            svc.start_worker("w1")
            deliveries = receiver.wait(2, timeout=90)
            # Sent again by the reaper (due at 20 s + 3 s), not by a restored copy of the old message.
            assert time.monotonic() - started < 60
            events = _webhook_events(client, job["id"], 3)
    finally:
        receiver.close()
    assert len({d["headers"]["webhook-id"] for d in deliveries}) == 1
    assert [(e["data"]["attempt"], e["data"].get("resent", False), e["data"].get("delivered")) for e in events[:3]] == [
        (1, False, False),
        (2, True, None),
        (2, False, True),
    ]


def test_cancelled_job_is_delivered_with_the_rotated_secret(svc, client, inputs):
    old = client.http.get("/v1/webhooks/secret").json()["secret"]
    assert svc.cli("webhooks", "secret", "--tenant", "hooks").strip() == old
    new = client.http.post("/v1/webhooks/secret/rotate").json()["secret"]
    assert new != old and new.startswith("whsec_")
    assert client.http.get("/v1/webhooks/secret").json()["secret"] == new
    receiver = Receiver()
    try:
        resp = client.http.post(
            "/v1/jobs", json={**inputs, "hyperparameters": {"epochs": 200}, "webhook_url": receiver.url}
        )
        assert resp.status_code == 201, resp.text
        cancelled = client.http.post(f"/v1/jobs/{resp.json()['id']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        (delivery,) = receiver.wait(1)
        time.sleep(1)  # a job ends once: no second delivery follows
        assert len(receiver.requests) == 1
    finally:
        receiver.close()
    payload = verify_webhook(new, delivery["headers"], delivery["body"])
    assert payload["type"] == "job.cancelled" and payload["data"]["status"] == "cancelled"
    with pytest.raises(WebhookVerificationError):
        verify_webhook(old, delivery["headers"], delivery["body"])
    # The CLI rotates too, and the CLI and the API agree.
    rotated = svc.cli("webhooks", "secret", "--tenant", "hooks", "--rotate").strip()
    assert rotated not in (old, new)
    assert client.http.get("/v1/webhooks/secret").json()["secret"] == rotated


def test_webhook_url_shape_is_checked(client, inputs):
    for url in ("ftp://example.com/x", "not a url", "https://user:pw@example.com/x"):
        resp = client.http.post("/v1/jobs", json={**inputs, "webhook_url": url})
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["code"] == "invalid_request"


def test_private_targets_are_refused_without_the_setting(tmp_path):
    """A real API process with the default settings answers 422 for loopback, private and link-local URLs."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_")}
    env.update({"DISTILLERY_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT)})

    def run(*a):
        return subprocess.run(
            [sys.executable, "-m", "distillery_cli", *a],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout

    key = run("keys", "create", "--tenant", "t").strip().splitlines()[-1]
    api = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"})
        deadline = time.monotonic() + 60
        while True:
            try:
                http.get("/healthz").raise_for_status()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "API did not start"
                time.sleep(0.3)
        for url in (
            "http://127.0.0.1:9/hook",
            "http://localhost/hook",
            "http://10.0.0.7/hook",
            "http://192.168.1.1/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/hook",
        ):
            resp = http.post("/v1/jobs", json={"teacher_id": "mdl_x", "train_dataset_id": "dst_x", "webhook_url": url})
            assert resp.status_code == 422, (url, resp.text)
            assert resp.json()["error"]["code"] == "webhook_url_refused", resp.text
    finally:
        api.terminate()
        api.wait(timeout=20)


def test_delivery_time_check_and_signature_unit():
    # Resolved again before each delivery: a name that resolves to loopback is refused there too.
    for url in ("http://localhost:8080/x", "http://127.0.0.2/x", "http://[::ffff:10.0.0.1]/x"):
        with pytest.raises(WebhookTargetError):
            check_target(url, allow_private=False)
    assert check_target("http://127.0.0.1:1/x", allow_private=True) == []
    # Known-answer check of the signing scheme (Standard Webhooks' reference example).
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    assert verify_webhook(secret, headers, body, now=1614265330) == json.loads(body)
    assert (
        signed_headers(secret, headers["webhook-id"], body, 1614265330)["webhook-signature"]
        == headers["webhook-signature"]
    )
    with pytest.raises(WebhookVerificationError):
        verify_webhook(secret, {**headers, "webhook-signature": "v1,AAAA"}, body, now=1614265330)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(secret, {k: v for k, v in headers.items() if k != "webhook-id"}, body, now=1614265330)
