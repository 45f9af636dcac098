"""Ranks benchmark: the same job through the job child at 1 rank and at N ranks (`gpus: N`), samples/s and accuracy.

    .venv/bin/python tests/benchmarks/bench_ddp.py                      # 1 vs 2 CPU ranks on gloo, 1 thread each
    .venv/bin/python tests/benchmarks/bench_ddp.py --hidden 512 512     # a wider student: more compute per step
    python3 tests/benchmarks/bench_ddp.py --gpus 2 --rows 200000        # NCCL where there are 2 CUDA devices

The job is the digits data (tests/support/digits.py; --rows repeats it with a little noise to that many rows),
a plain recipe, an MLP student, with the global batch the same at every rank count (each rank trains
batch_size / ranks rows a step). Each run is `python -m worker.job_child` outside the sandbox, as the service
starts it minus bubblewrap, with OMP_NUM_THREADS=1 per rank on the CPU. samples/s = training rows x epochs /
the report's train_seconds (the training phase: teacher pass, evaluation, export and process start excluded);
the job's whole wall time is printed beside it. Prints figures; asserts nothing about timing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.support import digits  # noqa: E402


def write_data(folder: Path, rows: int | None) -> dict:
    x, y, x_test, y_test = digits.digits_arrays()
    if rows and rows > len(x):
        rng = np.random.default_rng(0)
        pick = rng.integers(0, len(x), rows)
        x = np.clip(x[pick] + rng.normal(0, 0.05, (rows, x.shape[1])).astype(np.float32), 0, 1)
        y = y[pick]
    return {
        "teacher": str(digits.train_digits_teacher()),
        "train": {"path": str(digits.write_npz(folder / "train.npz", x, y)), "format": "npz"},
        "eval": {"path": str(digits.write_npz(folder / "test.npz", x_test, y_test)), "format": "npz"},
    }


def run_job(folder: Path, files: dict, config: dict, gpus: int) -> tuple[dict, float]:
    """One job through the job child; (report, wall seconds)."""
    attempt = folder / f"gpus-{gpus}" / "attempt-1"
    attempt.mkdir(parents=True)
    request = {
        **files,
        "config": config,
        "out_dir": str(attempt / "artifacts"),
        "checkpoint_dir": str(attempt.parent / "checkpoints"),
        "cache_dir": str(folder / "cache"),  # shared: the second job reads the first one's teacher outputs
        "stop_file": str(attempt / "stop"),
        "gpus": gpus,
    }
    (attempt / "request.json").write_text(json.dumps(request))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if config.get("device") == "cpu":
        env["OMP_NUM_THREADS"] = "1"
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "worker.job_child", str(attempt / "request.json")],
        capture_output=True,
        text=True,
        env=env,
        timeout=3000,
    )
    wall = time.perf_counter() - started
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    if "report" not in answer:
        raise SystemExit(f"the {gpus}-rank job failed: {answer}\n{done.stderr[-3000:]}")
    return answer["report"], wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=2, help="ranks of the second job")
    parser.add_argument("--rows", type=int, default=None, help="training rows (digits repeated, with noise)")
    parser.add_argument("--hidden", type=int, nargs="+", default=[64])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu", help="cpu (gloo ranks) or cuda (NCCL ranks with enough GPUs)")
    args = parser.parse_args()
    config = {
        "recipe": "plain",
        "student": {"architecture": "mlp", "hidden_sizes": args.hidden},
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": 0.01,
        "seed": 0,
        "export": ["safetensors"],
        "device": args.device,
        "patience": None,
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = write_data(folder, args.rows)
        rows = len(np.load(files["train"]["path"])["y"])
        print(f"digits {rows} rows, MLP {args.hidden}, {args.epochs} epochs, global batch {args.batch_size}, "
              f"device {args.device}, os.cpu_count() {os.cpu_count()}")  # fmt: skip
        results = {}
        for gpus in (1, args.gpus):
            report, wall = run_job(folder, files, config, gpus)
            trained = round(rows * 0.9) * args.epochs  # the engine holds 10% out for its best epoch
            rate = trained / report["train_seconds"]
            results[gpus] = rate
            print(f"{gpus} rank(s): {rate:10.0f} samples/s (training {report['train_seconds']:.2f} s, job wall "
                  f"{wall:.1f} s), student accuracy {report['student']['accuracy']:.4f}")  # fmt: skip
        print(f"ratio {args.gpus} ranks / 1 rank: {results[args.gpus] / results[1]:.2f}x")


if __name__ == "__main__":
    main()
