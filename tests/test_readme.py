"""The README's commands work as written: `distillery up` serves, the quickstart runs, CI runs the test command."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch

from tests.support.digits import digits_arrays, train_digits_teacher, write_npz
from tests.support.service import assert_no_leftovers, free_port, stop_up

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def block(marker: str) -> str:
    """The bash block that follows `<!-- marker -->` in the README."""
    match = re.search(rf"<!-- {marker} -->\s*```bash\n(.*?)```", README, re.S)
    assert match, f"README has no {marker} block"
    return match.group(1).strip()


def new_users_folder(tmp_path: Path, key: str | None = None) -> Path:
    """A folder as a new user has it: the venv the install step made (the one the tests run in stands in for it)
    and, when given, a key file as `distillery up` leaves it."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parents[1])
    if key is not None:
        (tmp_path / ".distillery").mkdir()
        (tmp_path / ".distillery" / "api_key").write_text(key + "\n")
    return tmp_path


def run_quickstart(cwd: Path, url: str, timeout: float, **env: str) -> tuple[int | None, str, str, float]:
    """Run the Quickstart as pasted into a terminal (plain bash): (exit code or None if it ran past `timeout`,
    stdout, stderr, seconds). A run past the timeout is stopped with every process it started."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_")}, "DISTILLERY_URL": url, **env}
    started = time.monotonic()
    proc = subprocess.Popen(
        ["bash", "-c", block("quickstart")],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        code = None
    return code, out, err, time.monotonic() - started


def assert_stops_with_one_line(code, out, err, seconds, *expected: str) -> str:
    """The Quickstart stopped within a few seconds, failing, with one line that says why (no traceback)."""
    said = (out + err).strip()
    assert code is not None, f"the Quickstart did not stop in {seconds:.0f} s; it said:\n{said[-3000:]}"
    assert code != 0 and seconds < 10, (code, seconds, said[-3000:])
    assert len(said.splitlines()) == 1 and "Traceback" not in said, said[-3000:]
    for text in expected:
        assert text in said, said
    return said


def test_quickstart_stops_at_once_when_the_service_is_down(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    run = run_quickstart(new_users_folder(tmp_path, "dk_from_an_earlier_up"), url, timeout=40)
    said = assert_stops_with_one_line(*run, "cannot reach", url, "distillery up")
    assert said.startswith("error:"), said


def test_quickstart_stops_at_once_on_a_wrong_key(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_")}
    env.update(DISTILLERY_DATA_DIR=str(tmp_path / "data"), PYTHONUNBUFFERED="1")
    subprocess.run(
        [sys.executable, "-m", "distillery_cli", "migrate"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    log = open(tmp_path / "api.log", "wb")  # noqa: SIM115 - closed below
    api = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = httpx.get(url + "/v1/jobs", headers={"Authorization": "Bearer dk_wrong"}, timeout=5)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and api.poll() is None, (tmp_path / "api.log").read_text()
                time.sleep(0.3)
        assert answer.status_code == 401
        message = answer.json()["error"]["message"]
        folder = new_users_folder(tmp_path / "user", "dk_wrong")
        # The wrong key from the key file, and from DISTILLERY_API_KEY (which goes first, as for the CLI).
        assert_stops_with_one_line(*run_quickstart(folder, url, timeout=40), "401", message)
        (folder / ".distillery" / "api_key").write_text("dk_also_wrong\n")
        assert_stops_with_one_line(*run_quickstart(folder, url, timeout=40, DISTILLERY_API_KEY="dk_wrong"), message)
        assert not (folder / "example").exists()  # it stopped before doing anything
    finally:
        api.terminate()
        api.wait(timeout=30)
        log.close()


def test_ci_runs_exactly_the_readme_test_command():
    command = block("test-command")
    assert "pytest" in command and "pip install" in command
    extracted = subprocess.run(
        [
            "bash",
            "-c",
            "awk '/<!-- test-command -->/{f=1; next} f && /^```bash/{g=1; next} g && /^```/{exit} g' README.md",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert extracted == command
    assert "test-command" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.integration
def test_run_command_serves_and_the_quickstart_works_as_written(tmp_path):
    run_command = block("run-command")
    serve = run_command.rsplit("&&", 1)[1].strip()
    assert serve == ".venv/bin/distillery up"
    new_users_folder(tmp_path)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILLERY_")}
    env.update(DISTILLERY_API_PORT=str(port), PYTHONUNBUFFERED="1")
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115 - closed below
    up = subprocess.Popen(
        ["bash", "-c", f"exec {serve}"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        output = (tmp_path / "up.log").read_text()
        assert f"http://127.0.0.1:{port}" in output, output
        key = (tmp_path / ".distillery" / "api_key").read_text().strip()
        assert key in output.splitlines(), "the key is printed on its own line"
        code, stdout, stderr, _ = run_quickstart(tmp_path, url, timeout=600)
        assert code == 0, stdout[-3000:] + stderr[-3000:] + output[-3000:]
        assert '"status": "succeeded"' in stdout
        assert '"compression_ratio"' in stdout and '"baseline": {' in stdout
        student = torch.jit.load(str(tmp_path / "student.pt"))
        assert student(torch.zeros(2, 64)).shape == (2, 10)
        # The CLI against the same server, on the digits fixture: files in --out, exit 0; a bad teacher fails.
        x_train, y_train, x_test, y_test = digits_arrays()
        args = [
            "--train",
            str(write_npz(tmp_path / "d_train.npz", x_train, y_train)),
            "--eval",
            str(write_npz(tmp_path / "d_eval.npz", x_test, y_test)),
            "--student",
            "mlp:hidden_sizes=[32]",
            "--epochs",
            "40",
        ]
        cli_env = {**env, "DISTILLERY_URL": url, "DISTILLERY_API_KEY": key}
        run = subprocess.run(
            [".venv/bin/distillery", "run", "--teacher", str(train_digits_teacher(tmp_path)), *args, "--out", "out"],
            cwd=tmp_path,
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        produced = {p.name for p in (tmp_path / "out").iterdir()}
        assert {"student.pt", "manifest.json", "report.json", "report.html"} <= produced, produced
        bad = tmp_path / "bad.pt"
        bad.write_text("not a model")
        failed = subprocess.run(
            [".venv/bin/distillery", "run", "--teacher", str(bad), *args, "--out", "bad"],
            cwd=tmp_path,
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert failed.returncode != 0 and "TorchScript" in failed.stdout + failed.stderr
    finally:
        code = stop_up(up, log)
    assert code == 0, (tmp_path / "up.log").read_text()[-3000:]
    # Ctrl-C / SIGTERM stops everything: no worker outlives `up`.
    assert_no_leftovers(up)
