"""The README's commands work as written: `distillery up` serves, the quickstart runs, CI runs the test command."""

from __future__ import annotations

import os
import re
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


def test_ci_runs_exactly_the_readme_test_command():
    command = block("test-command")
    assert "pytest" in command and "pip install" in command
    extracted = subprocess.run(
        [
            "bash",
            "-c",
            "awk '/<!-- test-command -->/{f=1; next} f && /^```bash/{g=1; next} g && /^```/{exit} g' "
            "README.md",
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
    # A new user's folder: the venv the tests run in stands in for the one the install step made.
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parents[1])
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
        quick = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block("quickstart")],
            cwd=tmp_path,
            env={**env, "DISTILLERY_URL": url},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert quick.returncode == 0, quick.stdout[-3000:] + quick.stderr[-3000:] + output[-3000:]
        assert '"status": "succeeded"' in quick.stdout
        assert '"compression_ratio"' in quick.stdout
        student = torch.jit.load(str(tmp_path / "student.pt"))
        assert student(torch.zeros(2, 64)).shape == (2, 10)
        # The CLI against the same server, on the digits fixture: files in --out, exit 0; a bad teacher fails.
        x_train, y_train, x_test, y_test = digits_arrays()
        args = ["--train", str(write_npz(tmp_path / "d_train.npz", x_train, y_train)),
                "--eval", str(write_npz(tmp_path / "d_eval.npz", x_test, y_test)),
                "--student", "mlp:hidden_sizes=[32]", "--epochs", "40"]
        cli_env = {**env, "DISTILLERY_URL": url, "DISTILLERY_API_KEY": key}
        run = subprocess.run([".venv/bin/distillery", "run", "--teacher", str(train_digits_teacher(tmp_path)),
                              *args, "--out", "out"], cwd=tmp_path, env=cli_env, capture_output=True, text=True,
                             timeout=600)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        produced = {p.name for p in (tmp_path / "out").iterdir()}
        assert {"student.pt", "manifest.json", "report.json", "report.html"} <= produced, produced
        bad = tmp_path / "bad.pt"
        bad.write_text("not a model")
        failed = subprocess.run([".venv/bin/distillery", "run", "--teacher", str(bad), *args, "--out", "bad"],
                                cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=300)
        assert failed.returncode != 0 and "TorchScript" in failed.stdout + failed.stderr
    finally:
        code = stop_up(up, log)
    assert code == 0, (tmp_path / "up.log").read_text()[-3000:]
    # Ctrl-C / SIGTERM stops everything: no worker outlives `up`.
    assert_no_leftovers(up)
