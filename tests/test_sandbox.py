"""worker/sandbox.py: hostile TorchScript teachers end only their own sandboxed child, with a clear error."""

from __future__ import annotations

import os
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
from worker.sandbox import (
    GiB,
    SandboxError,
    SandboxLimits,
    best_mechanism,
    compute_teacher_outputs_sandboxed,
    inspect_model_sandboxed,
    run_sandboxed,
)

SECRET = b"top-secret-4b1d"


@pytest.fixture
def inputs(tmp_path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    paths = {}
    for name, rows in (("train", 50), ("eval", 7)):
        paths[name] = tmp_path / f"{name}-x.npy"
        np.save(paths[name], rng.normal(size=(rows, 4)).astype(np.float32))
    return paths


def test_mechanism_is_bwrap_here():
    # CI installs bubblewrap (.ci/run); a silent fallback would make the isolation tests prove nothing.
    assert best_mechanism() == "bwrap"


def test_teacher_outputs_match_in_process(tmp_path, inputs):
    module = Linear()
    teacher = save_script(module, tmp_path / "teacher.pt")
    result = compute_teacher_outputs_sandboxed(
        teacher,
        inputs,
        tmp_path / "job" / "teacher",
        SandboxLimits(wall_s=120, cpu_s=120, memory_bytes=4 * GiB),
    )
    for name, path in inputs.items():
        logits = np.load(result["outputs"][name], allow_pickle=False)
        expected = module(torch.from_numpy(np.load(path))).detach().numpy()
        np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
    info = result["info"]
    assert info["format"] == "torchscript" and info["num_classes"] == 3 and info["num_parameters"] == 15
    assert set(info["latency_ms"]) == {"batch_1", "batch_64"}
    # The teacher and inputs were bound read-only, not copied into the folder.
    assert os.path.getsize(tmp_path / "job" / "teacher" / "teacher.pt") == 0


def test_teacher_that_reads_files_is_refused_before_the_sandbox_loads_it(tmp_path, inputs):
    secret = tmp_path / "outside" / "secret.bin"
    secret.parent.mkdir()
    secret.write_bytes(SECRET)
    teacher = save_script(ReadsFile(str(secret), len(SECRET)), tmp_path / "teacher.pt")
    # Out of the sandbox the module really does read it: the test is not vacuous.
    leaked = torch.jit.load(str(teacher))(torch.zeros(1, 4))
    assert bytes(leaked[0].to(torch.uint8).tolist()) == SECRET
    job = tmp_path / "job" / "teacher"
    with pytest.raises(SandboxError) as err:
        compute_teacher_outputs_sandboxed(teacher, inputs, job, SandboxLimits(wall_s=120, cpu_s=120))
    assert "torch.from_file" in err.value.message and "reads files" in err.value.message
    assert SECRET.decode() not in err.value.message
    assert not list(job.glob("logits-*"))


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


def test_teacher_that_loops_forever_is_stopped(tmp_path, inputs):
    teacher = save_script(LoopsForever(), tmp_path / "teacher.pt")
    with pytest.raises(SandboxError) as err:
        compute_teacher_outputs_sandboxed(teacher, inputs, tmp_path / "job", SandboxLimits(wall_s=25, cpu_s=8))
    assert err.value.code in ("sandbox_cpu_limit", "sandbox_timeout")
    assert "the teacher" in err.value.message and (
        "CPU time" in err.value.message or "longer than" in err.value.message
    )


def test_wall_clock_timeout(tmp_path, inputs):
    teacher = save_script(LoopsForever(), tmp_path / "teacher.pt")
    with pytest.raises(SandboxError) as err:
        compute_teacher_outputs_sandboxed(teacher, inputs, tmp_path / "job", SandboxLimits(wall_s=8, cpu_s=None))
    assert err.value.code == "sandbox_timeout" and "longer than 8 s" in err.value.message


def test_teacher_that_allocates_without_bound_is_stopped(tmp_path, inputs):
    teacher = save_script(AllocatesWithoutBound(), tmp_path / "teacher.pt")
    with pytest.raises(SandboxError) as err:
        compute_teacher_outputs_sandboxed(
            teacher, inputs, tmp_path / "job", SandboxLimits(wall_s=120, cpu_s=120, memory_bytes=3 * GiB)
        )
    assert err.value.code == "sandbox_memory_limit", err.value.message
    assert "3 GiB" in err.value.message


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
    np.save(tmp_path / "wide.npy", np.zeros((5, 7), np.float32))
    teacher = save_script(Linear(), tmp_path / "teacher.pt")
    with pytest.raises(SandboxError) as err:
        compute_teacher_outputs_sandboxed(
            teacher, {"train": tmp_path / "wide.npy"}, tmp_path / "job", SandboxLimits(wall_s=120, cpu_s=120)
        )
    assert err.value.code == "input_mismatch" and "[7]" in err.value.message, err.value.message


def test_private_tmp_is_mounted_before_the_binds(tmp_path):
    """A venv or job folder under /tmp (a CI clone) must stay visible: the tmpfs goes under the binds."""
    from worker.sandbox import SandboxLimits, _bwrap_command

    cmd = _bwrap_command(["python3"], tmp_path, SandboxLimits(), {})
    tmpfs = cmd.index("--tmpfs")
    binds = [i for i, arg in enumerate(cmd) if arg in ("--ro-bind", "--bind")]
    assert binds and tmpfs < min(binds)
    assert cmd[cmd.index("--bind") + 1] == str(tmp_path)


def test_a_stop_request_kills_the_child_long_before_its_limits(tmp_path, inputs):
    """A cancelled job (or a worker shutting down) does not wait for its teacher child to finish."""
    import time

    teacher = save_script(LoopsForever(), tmp_path / "teacher.pt")
    start = time.monotonic()
    with pytest.raises(SandboxError) as err:
        compute_teacher_outputs_sandboxed(
            teacher,
            inputs,
            tmp_path / "job",
            SandboxLimits(wall_s=120, cpu_s=120),
            should_stop=lambda: time.monotonic() - start > 3,
        )
    assert err.value.code == "stopped"
    assert time.monotonic() - start < 30
