"""The job child: one sandboxed process per job runs the whole engine, and is the only process that opens uploads.

`python -m worker.job_child REQUEST_JSON`, started by worker/supervisor.py inside the sandbox (worker/sandbox/):
it sees its job folder (read-write), its inputs (read-only, bound into that folder) and its tenant's
teacher-outputs cache, nothing else of the data dir, no network, no settings and no credentials. It loads the
teacher, computes or reuses its outputs, trains (augmentation and the teacher online included, uploaded students
included), evaluates, exports and writes the report: everything `distill()` does.

It talks to its parent only through its folder and stdout, one JSON object a line:
    {"event": {"type", "message", "data"}}       progress, phases, metrics, warnings
    {"report": {...}}                            the end: the artifacts are in out_dir
    {"error": {"code", "message"}}               the end: the job failed, for a reason a user can act on
    {"stopped": {"reason", "salvaged"}}          the end: asked to stop, with a checkpoint saved
Anything else the libraries print goes to stderr (fd 1 is pointed there), which the parent logs and never shows
a user. The parent asks it to stop by writing `stop_file` (the reason in it: cancel, shutdown, timeout, lost).

A request with `"gpus": N > 1` runs as N ranks (worker/job_ranks.py): this process is rank 0 and starts the
others as `python -m worker.job_child REQUEST_JSON --rank R N BACKEND FOLDER`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from worker.lm_metrics import CAUSAL_LM

STOP_POLL_S = 0.1


class StopFile:
    """should_stop() for the engine: true once the parent has written the stop file; `reason` says why."""

    def __init__(self, path: str | None):
        self.path, self.reason, self._checked = path, None, 0.0

    def __call__(self) -> bool:
        if self.reason is not None:
            return True
        now = time.monotonic()
        if self.path is None or now - self._checked < STOP_POLL_S:
            return False
        self._checked = now
        try:
            with open(self.path) as fh:
                self.reason = fh.read(64).strip() or "stop"
        except OSError:
            return False
        return True


def run_request(request: dict, emit: Callable[[dict], None], should_stop: StopFile, ranks=None) -> dict:
    """Run one job as the request says (as one of its `ranks`); the final protocol message (report, error or
    stopped)."""
    from worker.engine import DatasetSpec, DistillConfig, EngineError, distill
    from worker.engine.limits import DataLimits
    from worker.scrub import scrub_message

    def progress(event) -> None:
        emit({"event": {"type": event.type, "message": event.message, "data": event.data}})

    # Scratch space on the job's disk, not the sandbox's RAM-backed /tmp (an unpacked Hugging Face teacher).
    os.environ["DISTILLERY_SCRATCH_DIR"] = os.path.dirname(os.path.abspath(request["out_dir"]))
    try:
        if request.get("task") == CAUSAL_LM:  # the worker's word, from the teacher's validated info
            from worker.job_lm import run_lm

            return {"report": run_lm(request, emit, should_stop)}
        config = DistillConfig.from_dict(request["config"])
        train = DatasetSpec(**request["train"])
        evaluation = DatasetSpec(**request["eval"]) if request.get("eval") else None
        report = distill(
            request["teacher"],
            train,
            evaluation,
            config,
            request["out_dir"],
            progress=progress,
            should_stop=should_stop,
            checkpoint_dir=request.get("checkpoint_dir"),
            teacher_cache_dir=request.get("cache_dir"),
            max_student_parameters=request.get("max_student_parameters"),
            data_limits=DataLimits.from_dict(request["data_limits"]) if request.get("data_limits") else None,
            **({"ranks": ranks} if ranks is not None else {}),
        )
        return {"report": report}
    except EngineError as exc:
        if exc.code == "cancelled" and should_stop.reason:
            salvaged = _salvage(request) if should_stop.reason == "cancel" else False
            return {"stopped": {"reason": should_stop.reason, "salvaged": salvaged}}
        return {"error": {"code": exc.code, "message": scrub_message(exc.message)}}
    except MemoryError:
        return {"error": {"code": "sandbox_memory_limit", "message": "the job ran out of the memory it may use"}}
    except Exception as exc:  # our bug, not the user's: the details go to the operator's log only
        traceback.print_exc(file=sys.stderr)
        return {"error": {"code": "internal", "message": f"the job failed unexpectedly ({type(exc).__name__})"}}


def _salvage(request: dict) -> bool:
    """A cancelled job keeps its last checkpoint's student weights (worker/salvage.py) in salvage_dir."""
    from pathlib import Path

    from worker.salvage import salvage_student

    if not request.get("checkpoint_dir") or not request.get("salvage_dir"):
        return False
    try:
        spec = request["config"].get("student") or {}
        if "search" in spec:  # the weights are the chosen student's: the search's choice rebuilds them
            from worker.engine.student_search import saved_choice

            spec = saved_choice(request["checkpoint_dir"]) or spec
        public = {"uploaded": True} if "model_path" in spec else spec
        return bool(salvage_student(Path(request["checkpoint_dir"]), Path(request["salvage_dir"]), public))
    except Exception:
        traceback.print_exc(file=sys.stderr)
        return False


def _protocol_stream():
    """A private copy of stdout for the protocol; fd 1 then points at stderr, so library prints stay out of it."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return protocol


def run_ranked(request: dict, request_path: str, emit, should_stop: StopFile, finish) -> dict:
    """Rank 0 of a job of several ranks: start the peers, run the job with them, settle their ends."""
    from worker import job_ranks
    from worker.engine.ranks import join, leave, plan_ranks

    world, backend = plan_ranks(request.get("gpus"), (request.get("config") or {}).get("device"))
    assert backend is not None  # world > 1
    job_ranks.threads_per_rank(world)
    folder = job_ranks.rendezvous_folder(request)
    peers = job_ranks.start_peers(request_path, world, backend, folder)
    job_ranks.watch(peers, folder, finish)
    emit({"event": {"type": "info", "message": f"running as {world} ranks ({backend})", "data": {"ranks": world}}})
    try:
        ranks = join(0, world, backend, str(folder / "store"))
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        answer: dict = {"error": {"code": "internal", "message": f"the job's ranks could not meet ({exc})"}}
    else:
        answer = run_request(request, emit, should_stop, ranks)
        leave(ranks)
    return job_ranks.settle(answer, peers, folder)


def run_peer(request: dict, rank: int, world: int, backend: str, folder: str) -> int:
    """Rank `rank` (> 0) of a job: run the engine alongside rank 0, then write its answer for rank 0."""
    from worker import job_ranks
    from worker.engine.ranks import join, leave

    job_ranks.watch_parent()
    job_ranks.threads_per_rank(world)
    try:
        ranks = join(rank, world, backend, str(Path(folder) / "store"))
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        answer: dict = {"error": {"code": "internal", "message": f"rank {rank} could not join the job ({exc})"}}
    else:
        # No events and no stop file: rank 0 speaks for the job and shares its decision to stop.
        answer = run_request(request, lambda message: None, StopFile(None), ranks)
        leave(ranks)
    job_ranks.write_answer(Path(folder), rank, {k: v for k, v in answer.items() if k != "report"} or {"done": 1})
    return 0


def main() -> int:
    """Entry point: read the request, run it (as one rank or several), write the protocol lines."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    with open(sys.argv[1]) as fh:
        request = json.load(fh)
    if len(sys.argv) == 7 and sys.argv[2] == "--rank":
        os.dup2(2, 1)  # a peer has no protocol to keep clean: everything it prints goes to the log
        rank, world, backend, folder = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
        return run_peer(request, rank, world, backend, folder)
    protocol = _protocol_stream()
    lock = threading.Lock()

    def emit(message: dict) -> None:
        with lock:
            protocol.write(json.dumps(message, default=str) + "\n")

    def finish(answer: dict) -> None:
        """Write the answer once and end; a watchdog thread may call it while the main thread is stuck."""
        with lock:
            protocol.write(json.dumps(answer, default=str) + "\n")
            protocol.flush()
            os._exit(0)  # nothing after the answer: peers are settled, and the main thread may be stuck

    should_stop = StopFile(request.get("stop_file"))
    gpus = request.get("gpus")
    if isinstance(gpus, int) and not isinstance(gpus, bool) and gpus > 1:
        finish(run_ranked(request, sys.argv[1], emit, should_stop, finish))
    emit(run_request(request, emit, should_stop))
    protocol.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
