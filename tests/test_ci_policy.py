"""Under CI=true an integration test whose server is unreachable fails instead of skipping."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.service import free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "fixture,env_name,url",
    [
        ("postgres_url", "DISTILLERY_TEST_PG", "postgresql://postgres@127.0.0.1:{port}/test"),
        ("redis_url", "DISTILLERY_TEST_REDIS", "redis://127.0.0.1:{port}"),
    ],
)
def test_unreachable_server_skips_locally_and_fails_under_ci(tmp_path, fixture, env_name, url):
    probe = tmp_path / "test_probe.py"
    probe.write_text(f"def test_probe({fixture}):\n    assert {fixture}\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env[env_name] = url.format(port=free_port())  # nothing listens there
    env["PYTHONPATH"] = str(ROOT)

    def run(extra: dict) -> subprocess.CompletedProcess:
        # The project's conftest is loaded as a plugin, so the probe gets the real fixtures.
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-p",
                "tests.conftest",
                "--rootdir",
                str(tmp_path),
                str(probe),
            ],
            cwd=tmp_path,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=120,
        )

    local, ci = run({}), run({"CI": "true"})
    assert local.returncode == 0 and "1 skipped" in local.stdout, local.stdout[-2000:]
    # A failing fixture counts as an error in pytest's summary; either way the run fails.
    assert ci.returncode == 1 and ("1 failed" in ci.stdout or "1 error" in ci.stdout), ci.stdout[-2000:]
    assert "CI=true" in ci.stdout and "skipped" not in ci.stdout
