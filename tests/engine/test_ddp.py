"""Several ranks for one job (`gpus: 2` as two CPU ranks on gloo): the same student as one rank, checkpoints by
rank 0, resume and cancel across ranks, a dying or raising rank ends the job without a hang, and the sandbox."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import digits
from worker.sandbox import GiB, SandboxLimits
from worker.supervisor import Supervisor, stage

ROOT = Path(__file__).resolve().parents[2]
CONFIG = {
    "recipe": "plain",
    "student": {"architecture": "mlp", "hidden_sizes": [64]},
    "epochs": 6,
    "batch_size": 64,
    "learning_rate": 0.01,
    "seed": 0,
    "export": ["safetensors"],
    "device": "cpu",  # gloo ranks even where CUDA devices are (gpu_checks.sh runs the NCCL path)
}
RUN_BOUND_S = 150  # a run past this is a hang: the test kills it and fails


@pytest.fixture(scope="module")
def digits_files(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("ddp-data")
    x, y, x_test, y_test = digits.digits_arrays()
    return {
        "teacher": str(digits.train_digits_teacher()),
        "train": {"path": str(digits.write_npz(folder / "train.npz", x, y)), "format": "npz"},
        "eval": {"path": str(digits.write_npz(folder / "test.npz", x_test, y_test)), "format": "npz"},
    }


def write_request(job: Path, files: dict, gpus: int | None, attempt: int = 1, config: dict = CONFIG) -> Path:
    """A request as the supervisor stages it (without the sandbox): the job folder, an attempt, its stop file."""
    attempt_dir = job / f"attempt-{attempt}"
    attempt_dir.mkdir(parents=True)
    request = {
        **files,
        "config": config,
        "out_dir": str(attempt_dir / "artifacts"),
        "salvage_dir": str(attempt_dir / "salvaged"),
        "checkpoint_dir": str(job / "checkpoints"),
        "cache_dir": str(job.parent / "cache"),
        "stop_file": str(attempt_dir / "stop"),
        **({"gpus": gpus} if gpus is not None else {}),
    }
    path = attempt_dir / "request.json"
    path.write_text(json.dumps(request))
    return path


def run_child(request_path: Path, on_event=None) -> tuple[dict, list[dict], float]:
    """Run `python -m worker.job_child` to its end; (answer, events, seconds). `on_event(event, proc)` may act."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.job_child", str(request_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,
    )
    events, answer = [], None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            assert time.monotonic() - started < RUN_BOUND_S, "the job hung"
            message = json.loads(line)
            if "event" in message:
                events.append(message["event"])
                if on_event:
                    on_event(message["event"], proc)
            else:
                answer = message
        proc.wait(timeout=RUN_BOUND_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert answer is not None, "the job child ended without an answer"
    return answer, events, time.monotonic() - started


def losses(events: list[dict]) -> list[float]:
    return [e["data"]["train_loss"] for e in events if e["type"] == "metrics"]


def peer_answers(attempt: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in attempt.glob("ranks-*/answer-*.json")]


@pytest.fixture(scope="module")
def one_rank(digits_files, tmp_path_factory) -> tuple[dict, list[dict]]:
    job = tmp_path_factory.mktemp("one") / "job"
    answer, events, _ = run_child(write_request(job, digits_files, None))
    assert "report" in answer, answer
    return answer["report"], events


def test_two_gloo_ranks_train_the_student_one_rank_does(one_rank, digits_files, tmp_path):
    report, events = one_rank
    answer, events2, _ = run_child(write_request(tmp_path / "job", digits_files, 2))
    assert "report" in answer, answer
    assert any(e["message"] == "running as 2 ranks (gloo)" for e in events2)
    # The global batch is the single rank's (32 rows each), so the runs are the same up to float sums.
    assert abs(answer["report"]["student"]["accuracy"] - report["student"]["accuracy"]) <= 0.01
    assert losses(events2) == pytest.approx(losses(events), abs=1e-3)
    assert peer_answers(tmp_path / "job" / "attempt-1") == [{"done": 1}]


def test_the_auto_recipe_searches_and_trains_the_baseline_as_one_rank_does(digits_files, tmp_path):
    """The recipe's trials run on both ranks (augmented batches, the augmented-output cache) and choose alike."""
    x, y, _, _ = digits.digits_arrays()
    files = {**digits_files, "train": {"path": str(digits.write_npz(tmp_path / "small.npz", x[:400], y[:400])),
                                       "format": "npz"}, "eval": None}  # fmt: skip
    config = {**CONFIG, "recipe": "auto", "epochs": 4, "batch_size": 32, "student": {"architecture": "mlp"}}
    reports = []
    for gpus in (None, 2):
        answer, _, _ = run_child(write_request(tmp_path / f"job-{gpus}", files, gpus, config=config))
        assert "report" in answer, answer
        reports.append(answer["report"])
    one, two = reports
    assert two["recipe"]["chosen"] == one["recipe"]["chosen"]
    metrics = [[t["validation_metric"] for t in r["recipe"]["trials"]] for r in reports]
    assert len(metrics[0]) >= 2 and metrics[1] == pytest.approx(metrics[0], abs=0.02)
    for part in ("student", "baseline"):
        assert abs(two[part]["accuracy"] - one[part]["accuracy"]) <= 0.01, part


def test_cancel_stops_both_ranks_with_a_checkpoint_and_two_ranks_resume(one_rank, digits_files, tmp_path):
    job = tmp_path / "job"
    first = write_request(job, digits_files, 2)
    stop_file = Path(json.loads(first.read_text())["stop_file"])

    def cancel_after_first_epoch(event, proc) -> None:
        if event["type"] == "metrics" and not stop_file.exists():
            stop_file.write_text("cancel")

    answer, events, _ = run_child(first, cancel_after_first_epoch)
    assert answer == {"stopped": {"reason": "cancel", "salvaged": True}}, answer
    # The peer stopped too, at the same step: the ranks agree on stopping.
    assert [a["error"]["code"] for a in peer_answers(job / "attempt-1")] == ["cancelled"]
    assert json.loads((job / "checkpoints" / "checkpoint.json").read_text())["epoch"] >= 1

    answer, events, _ = run_child(write_request(job, digits_files, 2, attempt=2))
    assert "report" in answer, answer
    assert any(e["data"].get("resumed") for e in events)
    assert abs(answer["report"]["student"]["accuracy"] - one_rank[0]["student"]["accuracy"]) <= 0.01


def test_a_rank_that_dies_fails_the_job_with_its_reason_and_no_hang(digits_files, tmp_path):
    def kill_the_peer(event, proc) -> None:
        if event["type"] == "metrics":
            for child in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
                os.kill(int(child), signal.SIGKILL)

    answer, _, seconds = run_child(write_request(tmp_path / "job", digits_files, 2), kill_the_peer)
    assert answer["error"]["code"] == "internal", answer
    assert "rank 1 of the job ended unexpectedly (signal 9)" in answer["error"]["message"]
    assert seconds < RUN_BOUND_S


# Engine level: two processes calling distill() with their ranks, as the job child's ranks do.


def _rank_main(rank: int, folder: str, files: dict, mode: str) -> None:
    """One rank (in a spawned process): distill the digits job; write what happened to rank-R.json."""
    import torch

    from worker.engine import DatasetSpec, DistillConfig, EngineError, distill, loop
    from worker.engine import checkpoint as ckpt
    from worker.engine.ranks import join

    torch.set_num_threads(1)
    writes: list[int] = []
    save = ckpt.save_checkpoint
    ckpt.save_checkpoint = lambda *args: (writes.append(rank), save(*args))[1]  # type: ignore[assignment]
    if mode == "raise" and rank == 1:
        step, calls = loop.train_step, [0]

        def failing_step(*args, **kwargs):
            calls[0] += 1
            if calls[0] > 5:
                raise RuntimeError("rank 1 broke")
            return step(*args, **kwargs)

        loop.train_step = failing_step  # type: ignore[assignment]
    ranks = join(rank, 2, "gloo", os.path.join(folder, "store"), timeout_s=60)
    result: dict = {"writes": writes}
    try:
        config = DistillConfig.from_dict({**CONFIG, "epochs": 2})
        train = DatasetSpec(**files["train"])
        report = distill(
            files["teacher"],
            train,
            None,
            config,
            f"{folder}/out-{rank}",
            ranks=ranks,
            checkpoint_dir=f"{folder}/checkpoints",
        )
        result["report"] = bool(report)
    except EngineError as exc:
        result["error"] = [exc.code, exc.message]
    Path(folder, f"rank-{rank}.json").write_text(json.dumps(result))


def run_two_ranks(folder: Path, files: dict, mode: str) -> list[dict]:
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_rank_main, args=(rank, str(folder), files, mode)) for rank in (0, 1)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(RUN_BOUND_S)
    hung = [proc for proc in procs if proc.is_alive()]
    for proc in hung:
        proc.kill()
    assert not hung, "a rank hung"
    return [json.loads((folder / f"rank-{rank}.json").read_text()) for rank in (0, 1)]


def test_rank_zero_alone_writes_checkpoints_and_only_it_reports(digits_files, tmp_path):
    rank0, rank1 = run_two_ranks(tmp_path, digits_files, "plain")
    assert rank0 == {"writes": [0, 0], "report": True}, rank0  # one checkpoint an epoch
    assert rank1 == {"writes": [], "report": False}, rank1
    assert not (tmp_path / "out-1" / "report.json").exists() and (tmp_path / "out-0" / "report.json").exists()


def test_a_rank_that_raises_ends_the_other_with_an_error_not_a_hang(digits_files, tmp_path):
    rank0, rank1 = run_two_ranks(tmp_path, digits_files, "raise")
    assert rank1["error"] == ["internal", "RuntimeError: rank 1 broke"], rank1
    assert rank0["error"][0] == "internal" and re.search("Connection (closed|reset)", rank0["error"][1]), rank0


def test_two_ranks_meet_inside_the_sandbox(digits_files, tmp_path):
    """The FileStore rendezvous and gloo over loopback in bubblewrap's network namespace, through the supervisor."""
    job = tmp_path / "storage" / "t" / "jobs" / "job1"
    files = {name: Path(spec["path"]) for name, spec in digits_files.items() if name != "teacher"}
    staged = stage(
        job,
        1,
        teacher=Path(digits_files["teacher"]),
        train={"path": str(files["train"]), "format": "npz"},
        evaluation={"path": str(files["eval"]), "format": "npz"},
        config=CONFIG,
        student_model=None,
        cache_dir=tmp_path / "storage" / "t" / "cache",
        extra={"gpus": 2},
    )
    events: list = []
    limits = SandboxLimits(wall_s=RUN_BOUND_S, cpu_s=600, memory_bytes=6 * GiB)
    outcome = Supervisor(staged, limits, events.append, lambda: None, grace_s=10, mechanism="bwrap").run()
    assert outcome.error is None and outcome.crash is None, (outcome, events)
    assert outcome.report["student"]["accuracy"] > 0.9
    assert any(e.message == "running as 2 ranks (gloo)" for e in events)


def test_the_job_error_is_the_failing_rank_own_not_a_lost_connection():
    from worker.job_ranks import combined

    lost = {"error": {"code": "internal", "message": "RuntimeError: [gloo] Connection closed by peer"}}
    own = {"error": {"code": "non_finite", "message": "the training loss became NaN in epoch 2"}}
    assert combined(lost, {1: own}) == {
        "error": {"code": "non_finite", "message": "rank 1 of the job failed: the training loss became NaN in epoch 2"}
    }
    assert combined(own, {1: lost}) == own  # rank 0's own error stands
    assert combined(lost, {1: lost}) == lost
    assert combined({"report": {}}, {1: own}) == {"report": {}}


def test_a_peer_that_dies_while_rank_zero_waits_on_it_ends_the_job(tmp_path, monkeypatch):
    """Before the process group forms (or in a long wait) no collective fails: the watchdog ends the job."""
    import queue

    from worker import job_ranks

    monkeypatch.setattr(job_ranks, "STUCK_AFTER_PEER_S", 0.5)
    peer = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])
    ended: queue.Queue = queue.Queue()
    job_ranks.watch([peer], tmp_path, ended.put)
    answer = ended.get(timeout=30)
    assert answer == {"error": {"code": "internal", "message": "rank 1 of the job ended unexpectedly (exit code 3)"}}
