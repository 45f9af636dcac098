"""The dashboard at `/`, driven by headless Chromium (Debian's chromium package) against a live service:
the jobs list shows a finished job, and its page shows the report. Screenshots are saved in the test's tmp
dir.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.digits import digits_arrays, train_digits_teacher, write_npz
from tests.support.service import Client, running_service

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(
    url: str, tmp: Path, screenshot: Path | None = None, budget_ms: int = 15000, window: str = "1280,1600"
) -> str:
    """Load `url` in headless Chromium, let its scripts run for `budget_ms` of virtual time; the DOM."""
    if CHROMIUM is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed (CI=true: the dashboard test must not skip)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    profile = tmp / f"profile-{os.urandom(4).hex()}"
    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--virtual-time-budget={budget_ms}",
        f"--window-size={window}",
    ]
    if screenshot is not None:
        args.append(f"--screenshot={screenshot}")
    else:
        args.append("--dump-dom")
    out = subprocess.run([*args, url], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    with running_service(tmp_path_factory.mktemp("dashboard")) as service:
        yield service


@pytest.fixture(scope="module")
def finished(svc, tmp_path_factory) -> tuple[str, dict, dict]:
    """(key, job, report) of a small finished digits job."""
    d = tmp_path_factory.mktemp("files")
    key = svc.new_key("dash")
    client = Client(svc.url, key)
    x_train, y_train, x_test, y_test = digits_arrays()
    teacher = client.ready_upload("models", train_digits_teacher(d))
    train = client.ready_upload("datasets", write_npz(d / "train.npz", x_train, y_train))
    eval_ = client.ready_upload("datasets", write_npz(d / "eval.npz", x_test, y_test))
    body = {
        "teacher_id": teacher["id"],
        "train_dataset_id": train["id"],
        "eval_dataset_id": eval_["id"],
        "hyperparameters": {"epochs": 3},
        "student": {"architecture": "mlp", "hidden_sizes": [32]},
    }
    resp = client.http.post("/v1/jobs", json=body)
    assert resp.status_code == 201, resp.text
    job = client.wait_job(resp.json()["id"])
    assert job["status"] == "succeeded", job
    return key, job, client.http.get(f"/v1/jobs/{job['id']}/report").json()


def test_page_is_served_without_a_key(svc):
    resp = httpx.get(svc.url + "/")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    assert "<script>" in resp.text and "/v1/jobs" in resp.text


def test_without_a_key_the_page_asks_for_one(svc, tmp_path):
    dom = chromium(svc.url + "/", tmp_path, budget_ms=5000)
    assert 'id="login"' in dom and "API key" in dom


def test_jobs_list_shows_the_finished_job(svc, finished, tmp_path):
    key, job, _report = finished
    dom = chromium(f"{svc.url}/?key={key}#/", tmp_path)
    row = re.search(rf'<tr data-job="{job["id"]}">(.*?)</tr>', dom, re.S)
    assert row, dom[-3000:]
    assert "succeeded" in row.group(1) and "100%" in row.group(1)
    assert key not in dom  # the key is stored, not shown
    shot = tmp_path / "jobs.png"
    chromium(f"{svc.url}/?key={key}#/", tmp_path, screenshot=shot)
    assert shot.exists() and shot.stat().st_size > 10_000


def test_job_page_shows_the_report(svc, finished, tmp_path):
    key, job, report = finished
    url = f"{svc.url}/?key={key}#/jobs/{job['id']}"
    dom = chromium(url, tmp_path)
    assert job["id"] in dom and "succeeded" in dom
    summary = re.search(r'<table id="report-summary">(.*?)</table>', dom, re.S)
    assert summary, dom[-3000:]
    student_accuracy = f"{100 * report['student']['accuracy']:.1f}%"
    teacher_accuracy = f"{100 * report['teacher']['accuracy']:.1f}%"
    assert student_accuracy in summary.group(1) and teacher_accuracy in summary.group(1)
    assert f"{report['student']['num_parameters']}" in summary.group(1)
    # One history row per epoch, and the artifacts with their checksums.
    history = re.search(r'<table id="history">(.*?)</table>', dom, re.S)
    assert history and history.group(1).count("<tr>") == 1 + len(report["history"])
    # One name per number: the history is the validation slice's, the summary's accuracy the eval split's.
    assert "Validation accuracy" in history.group(1) and "Accuracy (eval split)" in summary.group(1)
    assert f"{100 * report['history'][-1]['validation_accuracy']:.1f}%" in history.group(1)
    # Every latency figure says where and how it was measured.
    latency = report["student"]["latency"]
    assert f"{latency['runtime']} on {latency['device']}, {latency['threads']} threads" in summary.group(1)
    assert "student.pt" in dom
    # The visual report (GET /v1/jobs/{id}/report.html) is embedded, and sized to its content.
    assert (
        httpx.get(f"{svc.url}/v1/jobs/{job['id']}/report.html", headers={"Authorization": f"Bearer {key}"}).status_code
        == 200
    )
    frame = re.search(r'<iframe[^>]*id="report-html"[^>]*>', dom, re.S)
    assert frame, dom[-3000:]
    assert "<svg" in html.unescape(re.search(r'srcdoc="([^"]*)"', frame.group(0)).group(1))
    height = re.search(r'style="height: (\d+)px;?"', frame.group(0))
    assert height and int(height.group(1)) > 1000, frame.group(0)[:300] + frame.group(0)[-300:]
    shot = tmp_path / "job.png"
    chromium(url, tmp_path, screenshot=shot)
    assert shot.exists() and shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


def colour_pixels(png: Path, rgb: tuple[int, int, int], tolerance: int = 24) -> int:
    """How many pixels of a screenshot are within `tolerance` of a colour."""
    from PIL import Image

    image = Image.open(png).convert("RGB")
    return sum(
        count
        for count, pixel in image.getcolors(image.width * image.height)
        if all(abs(a - b) <= tolerance for a, b in zip(pixel, rgb, strict=True))
    )


def test_job_page_draws_the_embedded_report(svc, finished, tmp_path):
    """The report's charts are painted in the page, not an empty box: its curves' colours (the teacher's red,
    the agreement's green), which the dashboard itself never uses, show in a screenshot of the whole page."""
    key, job, _report = finished
    shot = tmp_path / "job-full.png"
    chromium(f"{svc.url}/?key={key}#/jobs/{job['id']}", tmp_path, screenshot=shot, window="1280,4000")
    teacher_red, agreement_green = colour_pixels(shot, (0xDC, 0x26, 0x26)), colour_pixels(shot, (0x05, 0x96, 0x69))
    assert teacher_red > 100 and agreement_green > 100, (teacher_red, agreement_green, str(shot))


def test_new_job_page_lists_ready_uploads(svc, finished, tmp_path):
    key, job, _report = finished
    dom = chromium(f"{svc.url}/?key={key}#/new", tmp_path)
    assert 'id="submit"' in dom and job["teacher_id"] in dom and job["train_dataset_id"] in dom
