"""worker/sandbox/ and the job child: a whole job runs sandboxed; hostile models end only their own child."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support.hostile import (
    AllocatesWithoutBound,
    HangsOnLoad,
    Linear,
    LoopsForever,
    ReadsFile,
    save_script,
)
from worker.sandbox import GiB, SandboxLimits, best_mechanism, inspect_model_sandboxed, run_sandboxed
from worker.supervisor import Outcome, Supervisor, stage

SECRET = b"top-secret-4b1d"
HYPER = {"epochs": 2, "batch_size": 16, "seed": 0}


@pytest.fixture
def train_npz(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "uploads" / "train.npz"
    path.parent.mkdir()
    np.savez(path, x=rng.normal(size=(80, 4)).astype(np.float32), y=rng.integers(0, 3, 80))
    return path


def run_job_child(
    tmp_path: Path,
    teacher: Path,
    train: Path,
    limits: SandboxLimits | None = None,
    stop_reason=lambda: None,
    grace_s: float = 10,
    **hyper,
) -> tuple[Outcome, list, Path]:
    """Stage a job folder as the runner does and run its child to the end; (outcome, events, job folder)."""
    job_dir = tmp_path / "storage" / "t" / "jobs" / "job1"
    staged = stage(
        job_dir,
        1,
        teacher=teacher,
        train={"path": str(train), "format": "npz"},
        evaluation=None,
        config={**HYPER, **hyper, "student": {"architecture": "mlp", "hidden_sizes": [8]}},
        student_model=None,
        cache_dir=tmp_path / "storage" / "t" / "cache",
        extra={},
    )
    events: list = []
    limits = limits or SandboxLimits(wall_s=180, cpu_s=600, memory_bytes=6 * GiB)
    outcome = Supervisor(staged, limits, events.append, stop_reason, grace_s=grace_s).run()
    return outcome, events, job_dir


def test_mechanism_is_bwrap_here():
    # CI installs bubblewrap (.ci/run); a silent fallback would make the isolation tests prove nothing.
    assert best_mechanism() == "bwrap"


def test_a_whole_job_runs_in_the_child_with_its_inputs_bound_read_only(tmp_path, train_npz):
    teacher = save_script(Linear(), tmp_path / "uploads" / "teacher.pt")
    outcome, events, job_dir = run_job_child(tmp_path, teacher, train_npz)
    assert outcome.error is None and outcome.crash is None, (outcome, events)
    report = outcome.report
    assert report["teacher"]["num_parameters"] == 15 and report["student"]["accuracy"] is not None
    assert [e.data["phase"] for e in events if e.type == "phase"][:3] == ["validating", "teacher_outputs", "training"]
    artifacts = {p.name for p in (job_dir / "attempt-1" / "artifacts").iterdir()}
    assert {"student.pt", "report.json", "manifest.json"} <= artifacts
    # The uploads were bound read-only at mount points, never copied into the job folder.
    inputs = job_dir / "attempt-1" / "inputs"
    assert os.path.getsize(inputs / "teacher.pt") == 0 and os.path.getsize(inputs / "train.npz") == 0
    # The teacher-outputs cache (the tenant's, bound read-write) was filled.
    assert list((tmp_path / "storage" / "t" / "cache").glob("teacher-*.npy"))


def test_teacher_that_reads_files_is_refused_before_it_loads(tmp_path, train_npz):
    secret = tmp_path / "outside" / "secret.bin"
    secret.parent.mkdir()
    secret.write_bytes(SECRET)
    teacher = save_script(ReadsFile(str(secret), len(SECRET)), tmp_path / "uploads" / "teacher.pt")
    # Out of the sandbox the module really does read it: the test is not vacuous.
    leaked = torch.jit.load(str(teacher))(torch.zeros(1, 4))
    assert bytes(leaked[0].to(torch.uint8).tolist()) == SECRET
    outcome, events, job_dir = run_job_child(tmp_path, teacher, train_npz)
    assert outcome.error["code"] == "invalid_model", outcome
    assert "torch.from_file" in outcome.error["message"]
    assert SECRET.decode() not in str(outcome) + str(events)
    assert not any(SECRET in p.read_bytes() for p in job_dir.rglob("*") if p.is_file())


def test_child_cannot_read_outside_its_folder(tmp_path):
    """The file-system isolation itself, for whatever a model might find that the code audit does not."""
    secret = tmp_path / "outside" / "secret.bin"
    secret.parent.mkdir()
    secret.write_bytes(SECRET)
    job = tmp_path / "job"
    job.mkdir()
    (job / "probe.py").write_text(
        "import json, sys\n"
        "try:\n    data = open(sys.argv[1], 'rb').read().decode(); error = None\n"
        "except OSError as exc:\n    data, error = None, type(exc).__name__\n"
        "print(json.dumps({'data': data, 'error': error}))\n"
    )
    with open(secret, "rb") as f:  # readable from here: the test is not vacuous
        assert f.read() == SECRET
    answer = run_sandboxed("probe", [str(secret)], job, SandboxLimits(wall_s=30)).last_json()
    assert answer == {"data": None, "error": "FileNotFoundError"}, answer


def test_teacher_that_loops_forever_is_stopped_by_the_cpu_or_wall_clock(tmp_path, train_npz):
    teacher = save_script(LoopsForever(), tmp_path / "uploads" / "teacher.pt")
    outcome, _, _ = run_job_child(tmp_path, teacher, train_npz, SandboxLimits(wall_s=25, cpu_s=8))
    assert outcome.crash is not None and outcome.crash["code"] in ("sandbox_cpu_limit", "sandbox_timeout"), outcome
    assert "CPU time" in outcome.crash["message"] or "longer than" in outcome.crash["message"]


def test_wall_clock_timeout(tmp_path, train_npz):
    teacher = save_script(LoopsForever(), tmp_path / "uploads" / "teacher.pt")
    outcome, _, _ = run_job_child(tmp_path, teacher, train_npz, SandboxLimits(wall_s=8, cpu_s=None))
    assert outcome.timed_out and outcome.crash["code"] == "sandbox_timeout", outcome
    assert "longer than its 8 s" in outcome.crash["message"]


def test_teacher_that_allocates_without_bound_is_stopped(tmp_path, train_npz):
    teacher = save_script(AllocatesWithoutBound(), tmp_path / "uploads" / "teacher.pt")
    outcome, _, _ = run_job_child(
        tmp_path, teacher, train_npz, SandboxLimits(wall_s=120, cpu_s=120, memory_bytes=3 * GiB)
    )
    problem = outcome.error or outcome.crash
    assert problem["code"] == "sandbox_memory_limit", outcome


def test_code_that_runs_at_load_time_is_stopped_in_validation(tmp_path):
    model = save_script(HangsOnLoad(), tmp_path / "model.pt")
    result = inspect_model_sandboxed(model, tmp_path / "validate", SandboxLimits(wall_s=10, cpu_s=None))
    assert result["error"]["code"] == "sandbox_timeout"
    good = inspect_model_sandboxed(save_script(Linear(), tmp_path / "good.pt"), tmp_path / "validate2")
    assert good["info"]["format"] == "torchscript"


def test_child_sees_no_settings_and_no_network(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILLERY_DATABASE_URL", "postgresql://user:password@db/x")
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import json, os, socket\n"
        "s = socket.socket(); s.settimeout(2)\n"
        "try:\n    s.connect(('1.1.1.1', 53)); net = True\nexcept OSError:\n    net = False\n"
        "print(json.dumps({'env': sorted(k for k in os.environ if k.startswith('DISTILLERY')), 'net': net,\n"
        "  'root': sorted(os.listdir('/')), 'ifaces': [n for _, n in socket.if_nameindex()]}))\n"
    )
    result = run_sandboxed("probe", [], tmp_path, SandboxLimits(wall_s=30))
    answer = result.last_json()
    assert answer is not None, result.stderr
    assert answer["env"] == [] and answer["net"] is False and answer["ifaces"] == ["lo"]
    assert "home" not in answer["root"] and "var" not in answer["root"] and "opt" not in answer["root"]


def test_data_that_does_not_fit_the_teacher_is_input_mismatch(tmp_path):
    wide = tmp_path / "uploads" / "wide.npz"
    wide.parent.mkdir()
    np.savez(wide, x=np.zeros((40, 7), np.float32), y=np.zeros(40, np.int64))
    teacher = save_script(Linear(), tmp_path / "uploads" / "teacher.pt")
    outcome, _, _ = run_job_child(tmp_path, teacher, wide)
    assert outcome.error["code"] == "input_mismatch" and "[7]" in outcome.error["message"], outcome
    assert "/" not in outcome.error["message"].replace("/s", ""), outcome.error  # no server path


def test_private_tmp_is_mounted_before_the_binds(tmp_path):
    """A venv or job folder under /tmp (a CI clone) must stay visible: the tmpfs goes under the binds."""
    from worker.sandbox import bwrap_command

    cmd = bwrap_command(["python3"], tmp_path, SandboxLimits(), {})
    tmpfs = cmd.index("--tmpfs")
    binds = [i for i, arg in enumerate(cmd) if arg in ("--ro-bind", "--bind")]
    assert binds and tmpfs < min(binds)
    assert cmd[cmd.index("--bind") + 1] == str(tmp_path)


def test_a_stop_request_ends_a_stuck_child_after_the_grace_not_its_limits(tmp_path, train_npz):
    """A cancelled job whose model code never returns is killed after the grace period; the worker lives on."""
    teacher = save_script(LoopsForever(), tmp_path / "uploads" / "teacher.pt")
    start = time.monotonic()
    outcome, _, _ = run_job_child(
        tmp_path,
        teacher,
        train_npz,
        SandboxLimits(wall_s=300, cpu_s=600),
        stop_reason=lambda: "cancel" if time.monotonic() - start > 3 else None,
        grace_s=2,
    )
    assert outcome.stuck and outcome.report is None, outcome
    assert time.monotonic() - start < 60


def test_a_cancelled_child_checkpoints_and_salvages_its_student(tmp_path, train_npz):
    """Asked to stop mid-training, the child saves a checkpoint and writes the student's weights for the user."""
    teacher = save_script(Linear(), tmp_path / "uploads" / "teacher.pt")
    seen: list = []

    def stop_after_first_epoch():
        return "cancel" if any(e.type == "metrics" for e in seen) else None

    job_dir = tmp_path / "storage" / "t" / "jobs" / "job1"
    staged = stage(
        job_dir,
        1,
        teacher,
        {"path": str(train_npz), "format": "npz"},
        None,
        {**HYPER, "epochs": 200, "student": {"architecture": "mlp", "hidden_sizes": [8]}},
        None,
        tmp_path / "cache",
        {},
    )
    outcome = Supervisor(
        staged,
        SandboxLimits(wall_s=180, cpu_s=600, memory_bytes=6 * GiB),
        seen.append,
        stop_after_first_epoch,
        grace_s=30,
    ).run()
    assert outcome.stopped == "cancel" and outcome.salvaged, outcome
    assert (staged.salvage_dir / "checkpoint_student.safetensors").is_file()
    assert list((job_dir / "checkpoints").iterdir())
