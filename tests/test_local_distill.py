"""`distillery distill` runs the engine on local files with no server and writes the service's artifacts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from tests.support.digits import digits_arrays, train_digits_teacher, write_csv, write_npz

ROOT = Path(__file__).resolve().parents[1]


def _distill(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "distillery_cli", "distill", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )


def test_local_distill_writes_the_student_manifest_and_a_reproducible_report(tmp_path):
    x_train, y_train, x_test, y_test = digits_arrays()
    out = tmp_path / "out"
    done = _distill(
        "--teacher",
        str(train_digits_teacher(tmp_path)),
        "--train",
        str(write_csv(tmp_path / "train.csv", x_train, y_train)),
        "--eval",
        str(write_npz(tmp_path / "eval.npz", x_test, y_test)),
        "--student",
        "mlp:hidden_sizes=[32]",
        "--epochs",
        "5",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert {"student.pt", "student.safetensors", "student.json", "manifest.json", "report.json"} <= {
        p.name for p in out.iterdir()
    }
    assert not (out / ".checkpoints").exists()  # a finished run leaves only its artifacts
    report = json.loads((out / "report.json").read_text())
    student = torch.jit.load(str(out / "student.pt")).eval()
    with torch.no_grad():
        accuracy = float((student(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean())
    assert accuracy == report["student"]["accuracy"]
    assert report["eval_examples"] == len(y_test) and np.isfinite(report["compression_ratio"])
    assert "student accuracy" in done.stdout


def test_local_distill_reports_bad_input_without_a_traceback(tmp_path):
    x_train, y_train, _, _ = digits_arrays()
    train = write_npz(tmp_path / "train.npz", x_train, y_train)
    done = _distill("--teacher", str(train), "--train", str(train), "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert done.returncode == 2
    assert "\nerror: " in done.stderr and "TorchScript" in done.stderr and "Traceback" not in done.stderr


def test_local_distill_checks_the_student_spec_before_any_heavy_work(tmp_path):
    """A bad student fails at once, with one line and exit 2: no teacher read, no teacher outputs, no training."""
    x_train, y_train, _, _ = digits_arrays()
    teacher = train_digits_teacher(tmp_path)
    train = write_npz(tmp_path / "train.npz", x_train, y_train)
    out = tmp_path / "o"
    done = _distill(
        "--teacher", str(teacher), "--train", str(train), "--student", "mlp:widths=[3]", "--out", str(out), cwd=tmp_path
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == [
        "error: --student: unknown parameter(s) ['widths'] for mlp; allowed: ['dropout', 'hidden_sizes']"
    ]
    assert not out.exists()  # nothing was started: the run would have made --out first
    bad_export = _distill(
        "--teacher", str(teacher), "--train", str(train), "--export", "onnx,zip", "--out", str(out), cwd=tmp_path
    )
    assert bad_export.returncode == 2 and bad_export.stderr.startswith("error: --export: unknown format(s) zip")
    assert not out.exists()
