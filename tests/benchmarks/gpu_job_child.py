"""A job through the job child on the GPU, as the service runs it: staged folder, sandbox, JSON lines, report.

    python3 tests/benchmarks/gpu_job_child.py [--device cuda]

Runs the digits job twice through worker/supervisor.py + worker/job_child.py (plain, then with augmentation so the
teacher runs online in the child), and once in-process with distill() on the same inputs; prints the sandbox
mechanism, the report's device, accuracies and wall times, and the child's overhead against in-process as a
ratio. Asserts only that the jobs succeeded on the device asked for (a check, not a timing).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.support import digits  # noqa: E402
from worker.engine import DatasetSpec, DistillConfig, distill  # noqa: E402
from worker.sandbox import GiB, SandboxLimits, configured_mechanism  # noqa: E402
from worker.supervisor import Supervisor, host_has_gpu, stage  # noqa: E402

HYPER = {
    "recipe": "plain",  # the GPU check times the engine, not the auto recipe's search
    "epochs": 10,
    "batch_size": 64,
    "learning_rate": 3e-3,
    "student": {"architecture": "mlp", "hidden_sizes": [32]},
}


def through_child(tmp: Path, name: str, teacher: Path, train: Path, test: Path, config: dict, gpu: bool) -> dict:
    """Run one job through the child; its outcome, events' phases and wall time."""
    staged = stage(
        tmp / name,
        1,
        teacher,
        {"path": str(train), "format": "npz"},
        {"path": str(test), "format": "npz"},
        config,
        None,
        tmp / f"{name}-cache",
        {},
    )
    events: list = []
    limits = SandboxLimits(wall_s=600, cpu_s=None, memory_bytes=32 * GiB, gpu=gpu)
    started = time.perf_counter()
    outcome = Supervisor(staged, limits, events.append, lambda: None, grace_s=30).run()
    wall = time.perf_counter() - started
    return {"outcome": outcome, "wall_s": wall, "phases": [e.data.get("phase") for e in events if e.type == "phase"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="gpu-job-child-"))
    x_train, y_train, x_test, y_test = digits.digits_arrays()
    train = digits.write_npz(tmp / "train.npz", x_train, y_train)
    test = digits.write_npz(tmp / "test.npz", x_test, y_test)
    (tmp / "teacher").mkdir()
    teacher = digits.train_digits_teacher(tmp / "teacher")
    gpu = args.device.startswith("cuda")
    print(f"sandbox mechanism: {configured_mechanism()}; host_has_gpu: {host_has_gpu()}; device asked: {args.device}")
    rows, ok = [], True
    for name, extra in (("plain", {}), ("augmented", {"augmentation": {"noise": 0.05}})):
        config = {**HYPER, **extra, "device": args.device}
        run = through_child(tmp, name, teacher, train, test, config, gpu)
        outcome = run["outcome"]
        report = outcome.report or {}
        good = outcome.report is not None and str(report.get("device", "")).startswith(args.device)
        ok &= good
        rows.append(
            (
                f"child, {name}",
                run["wall_s"],
                report.get("device"),
                (report.get("student") or {}).get("accuracy"),
                (report.get("teacher") or {}).get("accuracy"),
            )
        )
        if not good:
            print(f"{name}: FAILED {outcome.error or outcome.crash}", flush=True)
        print(f"{name}: phases {run['phases']}", flush=True)
    started = time.perf_counter()
    config = DistillConfig.from_dict({**HYPER, "device": args.device})
    report = distill(
        str(teacher),
        DatasetSpec(path=str(train), format="npz"),
        DatasetSpec(path=str(test), format="npz"),
        config,
        str(tmp / "in-process"),
    )
    rows.append(
        (
            "in-process distill(), plain",
            time.perf_counter() - started,
            report["device"],
            report["student"]["accuracy"],
            report["teacher"]["accuracy"],
        )
    )
    print(f"{'way':32} {'wall s':>8}  {'device':28} {'student acc':>11} {'teacher acc':>11}")
    for way, wall, device, acc, tacc in rows:
        print(
            f"{way:32} {wall:8.2f}  {str(device):28} {acc if acc is None else f'{acc:.4f}':>11} "
            f"{tacc if tacc is None else f'{tacc:.4f}':>11}"
        )
    print(f"ratio child / in-process (plain, wall incl. the child's start): {rows[0][1] / rows[2][1]:.2f}")
    print(json.dumps({"ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
