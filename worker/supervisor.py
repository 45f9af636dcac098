"""Supervise one job child: stage its inputs, start it in the sandbox, turn its lines into events, see how it ended.

The worker process never opens, imports or loads an uploaded file (DESIGN.md, Trust boundary). It only:
- stages the job's inputs into the attempt's folder (read-only bind mounts; the files are not read here),
- writes the request the child reads, and starts worker/job_child.py in the sandbox,
- reads the child's JSON lines, checks them (types, sizes) and hands them on as events,
- asks the child to stop by writing its stop file (cancel, shutdown, runtime limit), and kills it when it does
  not stop within the grace period (its model code may never return) or runs past its wall clock,
- returns what the child answered; the runner records it, and the artifacts it left in its folder.
Everything the child says is untrusted: messages are scrubbed of paths and bounded, unknown event types become
"info", oversized data is dropped.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from contract import PHASES
from worker.sandbox import SandboxedProcess, SandboxLimits, limits_from_env, spawn_sandboxed
from worker.scrub import scrub_error, scrub_message

logger = logging.getLogger(__name__)

JOB_CHILD = "worker.job_child"
EVENT_TYPES = ("phase", "progress", "metrics", "warning", "info")
MAX_EVENT_DATA_BYTES = 16 * 1024
MAX_EVENTS = 5000  # events other than progress one child may write (progress is throttled by the recorder)
MAX_REPORT_BYTES = 4 * 1024**2
LINE_POLL_S = 0.25


@dataclass
class ChildEvent:
    """An event from the child, checked: the shape the JobRecorder takes."""

    type: str
    message: str
    data: dict


@dataclass
class StagedJob:
    """A job's folder laid out for its child: the request, the inputs' mount points, where results go."""

    job_dir: Path
    attempt_dir: Path
    out_dir: Path
    salvage_dir: Path
    stop_file: Path
    request_path: Path
    readonly_files: dict[Path, Path]
    writable_dirs: list[Path]


@dataclass
class Outcome:
    """How a job child ended."""

    report: dict | None = None
    error: dict | None = None  # {"code", "message"}, scrubbed
    stopped: str | None = None  # the stop reason the child acknowledged
    salvaged: bool = False
    stuck: bool = False  # asked to stop, it did not within the grace period and was killed
    timed_out: bool = False  # past its wall clock, killed
    returncode: int | None = None
    crash: dict | None = None  # {"code", "message"} when it died without an answer
    notes: list[str] = field(default_factory=list)


def stage(
    job_dir: Path,
    attempt: int,
    teacher: Path,
    train: dict,
    evaluation: dict | None,
    config: dict,
    student_model: Path | None,
    cache_dir: Path,
    extra: dict,
) -> StagedJob:
    """Lay out the attempt's folder and write the child's request; no upload is opened.

    `train` / `evaluation` are DatasetSpec fields whose `path` and `tokenizer_path` are stored files; they are
    bound read-only into `attempt-N/inputs/` and the request names them there. `extra` goes into the request
    as it is (caps, limits).
    """
    attempt_dir = job_dir / f"attempt-{attempt}"
    inputs = attempt_dir / "inputs"
    out_dir = attempt_dir / "artifacts"
    salvage_dir = attempt_dir / "salvaged"
    for folder in (inputs, out_dir, job_dir / "checkpoints", cache_dir):
        folder.mkdir(parents=True, exist_ok=True)
    readonly: dict[Path, Path] = {}

    def bind(name: str, source: Path) -> str:
        inside = inputs / (name + Path(source).suffix)
        readonly[inside] = Path(source)
        return str(inside)

    def spec(name: str, fields: dict) -> dict:
        fields = dict(fields)
        fields["path"] = bind(name, Path(fields["path"]))
        if fields.get("tokenizer_path"):
            fields["tokenizer_path"] = bind(f"{name}-tokenizer", Path(fields["tokenizer_path"]))
        return fields

    config = dict(config)
    if student_model is not None:
        config["student"] = {"model_path": bind("student", student_model)}
    stop_file = attempt_dir / "stop"
    stop_file.unlink(missing_ok=True)
    request = {
        "teacher": bind("teacher", teacher),
        "train": spec("train", train),
        "eval": spec("eval", evaluation) if evaluation else None,
        "config": config,
        "out_dir": str(out_dir),
        "salvage_dir": str(salvage_dir),
        "checkpoint_dir": str(job_dir / "checkpoints"),
        "cache_dir": str(cache_dir),
        "stop_file": str(stop_file),
        **extra,
    }
    request_path = attempt_dir / "request.json"
    request_path.write_text(json.dumps(request))
    return StagedJob(job_dir, attempt_dir, out_dir, salvage_dir, stop_file, request_path, readonly, [cache_dir])


def host_has_gpu() -> bool:
    """Whether this host can give a child a GPU, told without CUDA: device nodes, and not hidden by the worker."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return any(Path("/dev").glob("nvidia[0-9]*"))


def job_limits(wall_s: float, memory_bytes: int, gpu: bool) -> SandboxLimits:
    """The job child's limits: its wall clock, CPU time to match, memory; DISTILLERY_SANDBOX_* may lower them."""
    base = SandboxLimits(
        wall_s=wall_s, cpu_s=int(wall_s * (os.cpu_count() or 1)) + 60, memory_bytes=memory_bytes, gpu=gpu
    )
    limits = limits_from_env(base)
    limits.wall_s = min(limits.wall_s, wall_s)
    return limits


class Supervisor:
    """Runs one staged job child to its end; `should_stop()` says when to ask it to stop, and why."""

    def __init__(
        self,
        staged: StagedJob,
        limits: SandboxLimits,
        emit: Callable[[ChildEvent], None],
        stop_reason: Callable[[], str | None],
        grace_s: float,
        mechanism: str | None = None,
    ):
        self.staged, self.limits, self.emit, self.stop_reason = staged, limits, emit, stop_reason
        self.grace_s, self.mechanism = grace_s, mechanism
        self.events = 0
        self.answer: dict | None = None

    def run(self) -> Outcome:
        """Start the child, pump its lines until it exits (or is killed), and say how it ended."""
        child = spawn_sandboxed(
            JOB_CHILD,
            [str(self.staged.request_path)],
            self.staged.job_dir,
            self.limits,
            self.mechanism,
            readonly_files=self.staged.readonly_files,
            writable_dirs=self.staged.writable_dirs,
        )
        outcome = Outcome()
        try:
            self._pump(child, outcome)
            outcome.returncode = child.wait()
            tail = child.stderr_tail()
            if child.proc.returncode != 0 or self.answer is None:
                logger.warning("job child exited with %s; its stderr ends with:\n%s", outcome.returncode, tail[-4000:])
            else:
                logger.debug("job child stderr tail:\n%s", tail[-2000:])
            self._settle(child, outcome, tail)
        finally:
            child.close()
        return outcome

    def _pump(self, child: SandboxedProcess, outcome: Outcome) -> None:
        asked_at: float | None = None
        while True:
            line = child.next_line(LINE_POLL_S)
            if line is None:
                return
            if line:
                self._handle(line)
            reason = self.stop_reason()
            if reason and asked_at is None:
                self.staged.stop_file.write_text(reason)
                asked_at = time.monotonic()
                logger.info("asked the job child to stop (%s)", reason)
            if asked_at is not None and time.monotonic() - asked_at > self.grace_s:
                outcome.stuck = True
                child.kill()
                return
            if child.deadline_passed:
                outcome.timed_out = True
                child.kill()
                return

    def _handle(self, line: str) -> None:
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            logger.debug("job child wrote a line that is not JSON; ignored")
            return
        if not isinstance(message, dict) or len(message) != 1:
            return
        ((kind, body),) = message.items()
        if kind == "event":
            event = self._event(body)
            if event is not None:
                self.emit(event)
        elif kind in ("report", "error", "stopped") and self.answer is None:
            self.answer = {kind: body}

    def _event(self, body: object) -> ChildEvent | None:
        if not isinstance(body, dict):
            return None
        type_ = body.get("type") if body.get("type") in EVENT_TYPES else "info"
        if type_ != "progress":
            self.events += 1
            if self.events > MAX_EVENTS:
                if self.events == MAX_EVENTS + 1:
                    logger.warning("job child wrote more than %d events; the rest are dropped", MAX_EVENTS)
                return None
        data = body.get("data") if isinstance(body.get("data"), dict) else {}
        try:
            if len(json.dumps(data)) > MAX_EVENT_DATA_BYTES:
                data = {}
        except (TypeError, ValueError, RecursionError):
            data = {}
        if type_ == "phase" and data.get("phase") not in PHASES:
            return None
        return ChildEvent(type_, scrub_message(body.get("message") or ""), data)

    def _settle(self, child: SandboxedProcess, outcome: Outcome, stderr_tail: str) -> None:
        answer = self.answer or {}
        if "report" in answer:
            report = answer["report"]
            try:
                size = len(json.dumps(report))
            except (TypeError, ValueError, RecursionError):
                size = MAX_REPORT_BYTES + 1
            if isinstance(report, dict) and size <= MAX_REPORT_BYTES:
                outcome.report = report
            else:
                outcome.error = {"code": "internal", "message": "the job's report was not a report (or too large)"}
        elif "error" in answer:
            outcome.error = scrub_error(answer["error"])
        elif "stopped" in answer:
            body = answer["stopped"] if isinstance(answer["stopped"], dict) else {}
            outcome.stopped = str(body.get("reason") or "stop")[:32]
            outcome.salvaged = body.get("salvaged") is True
        elif not (outcome.stuck or outcome.timed_out):
            result = child.result([], timed_out=False)
            problem = result.failure("the job")
            problem = problem or {"code": "sandbox_crash", "message": "the job ended without an answer"}
            outcome.crash = scrub_error(problem, default_code="sandbox_crash")
        if outcome.timed_out:
            outcome.crash = {
                "code": "sandbox_timeout",
                "message": f"the job ran longer than its {self.limits.wall_s:g} s and was stopped",
            }
