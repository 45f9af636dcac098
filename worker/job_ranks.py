"""Several ranks for one job child (`gpus: N`): the job child is rank 0; ranks 1..N-1 are its own children.

All ranks run in the job child's sandbox (the same namespaces and limits, each its own RLIMITs) and meet through
a FileStore in a fresh folder of the attempt (no network but loopback). Rank 0 alone talks to the supervisor:
it emits the events, reads the stop file and writes the answer. A peer writes its own answer to
`answer-R.json` in that folder and exits. No rank may hang the job: a peer that dies makes rank 0's next
collective fail at once (gloo sees the closed connection); one that dies before the process group is formed, or
while rank 0 waits on it, is noticed by a watchdog thread that ends rank 0 with the peer's error. Rank 0 kills
the peers still running once it has its answer.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

PEER_EXIT_S = 30.0  # after a report, how long the peers get to leave the process group and exit
PEER_ERROR_S = 3.0  # after an error, how long the peers get to write theirs before they are killed
WATCH_S = 0.2
STUCK_AFTER_PEER_S = 10.0  # rank 0 still running this long after a peer failed: the watchdog ends the job
# Errors that only say another rank went away: the job's error is then that rank's own.
_COLLECTIVE = re.compile(r"gloo|nccl|connection (closed|reset)|process ?group|timed out|broken pipe", re.I)


def rendezvous_folder(request: dict) -> Path:
    """A new folder in the attempt for this run's store and the peers' answers (a retry never reuses a store)."""
    attempt = Path(request["out_dir"]).resolve().parent
    folder = attempt / f"ranks-{os.getpid()}-{time.time_ns()}"
    folder.mkdir(parents=True)
    return folder


def start_peers(request_path: str, world: int, backend: str, folder: Path) -> list[subprocess.Popen]:
    """Start ranks 1..world-1: the job child's own module, in this process's sandbox; their output to stderr."""
    return [
        subprocess.Popen(
            [sys.executable, "-m", "worker.job_child", request_path, "--rank", str(rank), str(world), backend]
            + [str(folder)],
            stdout=sys.stderr.fileno(),
            stderr=sys.stderr.fileno(),
        )
        for rank in range(1, world)
    ]


def peer_answer(folder: Path, rank: int, proc: subprocess.Popen) -> dict | None:
    """What peer `rank` answered, or an error for a peer that ended without one; None while it runs."""
    try:
        return json.loads((folder / f"answer-{rank}.json").read_text())
    except (OSError, ValueError):
        pass
    if proc.poll() is None:
        return None
    how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
    message = f"rank {rank} of the job ended unexpectedly ({how})"
    if proc.returncode in (-9, 137):
        message += "; it may have run out of the memory it may use"
    return {"error": {"code": "internal", "message": message}}


def combined(answer: dict, peer_answers: dict[int, dict | None]) -> dict:
    """The job's answer: rank 0's, unless it only says a peer went away and a peer says why."""
    error = answer.get("error")
    if error is None or not _COLLECTIVE.search(error.get("message", "")):
        return answer
    for rank, peer in sorted(peer_answers.items()):
        peer_error = (peer or {}).get("error")
        if peer_error and not _COLLECTIVE.search(peer_error.get("message", "")):
            message = peer_error["message"]
            prefix = "" if message.startswith(f"rank {rank} ") else f"rank {rank} of the job failed: "
            return {"error": {"code": peer_error["code"], "message": prefix + message}}
    return answer


def settle(answer: dict, peers: list[subprocess.Popen], folder: Path) -> dict:
    """Wait for (or kill) the peers once rank 0 has its answer; the job's answer."""
    deadline = time.monotonic() + (PEER_EXIT_S if "error" not in answer else PEER_ERROR_S)
    while any(p.poll() is None for p in peers) and time.monotonic() < deadline:
        time.sleep(WATCH_S)
    for proc in peers:
        if proc.poll() is None:
            logger.warning("rank %s did not exit; killed", proc.args[4])
            proc.kill()
            proc.wait()
    return combined(answer, {rank: peer_answer(folder, rank, p) for rank, p in enumerate(peers, start=1)})


def watch(peers: list[subprocess.Popen], folder: Path, end: Callable[[dict], None]) -> threading.Thread:
    """A daemon thread that ends the job (`end(answer)`) when a peer failed and rank 0 has not finished since."""

    def run() -> None:
        failed_at: float | None = None
        while True:
            time.sleep(WATCH_S)
            failed = [r for r, p in enumerate(peers, start=1) if _failed(peer_answer(folder, r, p))]
            if failed and failed_at is None:
                failed_at = time.monotonic()
            if failed_at is not None and time.monotonic() - failed_at > STUCK_AFTER_PEER_S:
                timeout = {"error": {"code": "internal", "message": "a rank of the job is stuck (timed out)"}}
                end(settle(timeout, peers, folder))
                return

    thread = threading.Thread(target=run, name="peer-watch", daemon=True)
    thread.start()
    return thread


def _failed(answer: dict | None) -> bool:
    error = (answer or {}).get("error")
    return bool(error) and error.get("code") != "cancelled"  # a cancel ends rank 0 too, with its checkpoint


def watch_parent() -> None:
    """In a peer: exit when rank 0 is gone (outside a sandbox nothing else would end an orphaned rank)."""
    parent = os.getppid()

    def run() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=run, name="parent-watch", daemon=True).start()


def write_answer(folder: Path, rank: int, answer: dict) -> None:
    """A peer's answer, for rank 0 (atomic: rank 0 may read while it is written)."""
    tmp = folder / f".answer-{rank}.json"
    tmp.write_text(json.dumps(answer, default=str))
    os.replace(tmp, folder / f"answer-{rank}.json")


def threads_per_rank(world: int) -> None:
    """Share the CPU cores out between the ranks unless the operator set a thread count."""
    if "OMP_NUM_THREADS" in os.environ:
        return
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
