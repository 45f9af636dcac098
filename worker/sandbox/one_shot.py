"""One-shot sandboxed runs: start a child, wait for its one answer (an upload's validation, a probe)."""

from __future__ import annotations

import collections
import json
import logging
from collections.abc import Callable
from pathlib import Path

from worker.sandbox.child_results import SandboxError, SandboxResult, memory_error
from worker.sandbox.confinement import GiB, SandboxLimits, limits_from_env
from worker.sandbox.sandboxed_process import spawn_sandboxed
from worker.scrub import looks_like_out_of_memory, scrub_error

logger = logging.getLogger(__name__)


MAX_INFO_BYTES = 256 * 1024  # an upload's info is a summary: format, shapes, classes, rows
MAX_KEPT_LINES = 200  # a one-shot child answers in its last line; the rest is noise


def run_sandboxed(
    module: str,
    args: list[str],
    job_dir: Path,
    limits: SandboxLimits | None = None,
    mechanism: str | None = None,
    readonly_files: dict[Path, Path] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SandboxResult:
    """Run `python -m module *args` sandboxed to its end, with only `job_dir` visible and writable.

    `should_stop` is polled twice a second; when it says so (a cancelled job, a worker shutting down) the child
    is killed and SandboxError("stopped") is raised.
    """
    child = spawn_sandboxed(module, args, job_dir, limits, mechanism, readonly_files)
    kept: collections.deque[str] = collections.deque(maxlen=MAX_KEPT_LINES)
    timed_out = stopped = False
    try:
        while True:
            line = child.next_line(timeout=0.5)
            if line is None:
                break
            if line:
                kept.append(line)
            if should_stop is not None and should_stop():
                stopped = True
                break
            if child.deadline_passed:
                timed_out = True
                break
        if stopped or timed_out:
            child.kill()
        child.wait()
        result = child.result(list(kept), timed_out)
    finally:
        child.close()
    if stopped:
        raise SandboxError("stopped", "the sandboxed run was stopped because the job was cancelled or handed back")
    if result.returncode != 0:
        logger.info(
            "sandboxed %s exited with %s (%s): %s", module, result.returncode, result.mechanism, result.stderr[-2000:]
        )
    return result


def inspect_sandboxed(
    kind: str,
    path: Path,
    workdir: Path,
    options: dict | None = None,
    limits: SandboxLimits | None = None,
    extra_files: dict[str, Path] | None = None,
) -> dict:
    """Open an upload in the sandbox; {"info": ...} or {"error": {"code", "message"}}.

    `workdir` is a fresh, empty folder: the only one the child sees; the file (and `extra_files`, by name, e.g. a
    tokenizer) appear in it read-only. `options` travel to worker.inspect_child as JSON (paths in them must be
    the names given in `extra_files`, which are replaced by their paths inside the folder).
    """
    what = "opening the model" if kind == "models" else "reading the dataset"
    limits = limits or limits_from_env(SandboxLimits(wall_s=300, cpu_s=600, memory_bytes=4 * GiB))
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    inside = workdir / ("upload" + Path(path).suffix)
    readonly = {inside: Path(path)}
    options = dict(options or {})
    for key, src in (extra_files or {}).items():
        dest = workdir / f"{key}{Path(src).suffix}"
        readonly[dest] = Path(src)
        options[key] = str(dest)
    result = run_sandboxed(
        "worker.inspect_child",
        [kind, str(inside), json.dumps(options)],
        workdir,
        limits,
        readonly_files=readonly,
    )
    problem = result.failure(what)
    if problem is not None:
        return {"error": scrub_error(problem, default_code="sandbox_crash")}
    answer = result.last_json()
    if not isinstance(answer, dict) or not ("info" in answer or "error" in answer):
        return {"error": {"code": "sandbox_crash", "message": f"{what} gave no answer"}}
    # The child is untrusted (a .pt2 unpickles in it): its answer is checked like any input.
    if "error" in answer:
        error = scrub_error(answer["error"], default_code="invalid_" + kind[:-1])
        return {"error": memory_error(what, limits) if looks_like_out_of_memory(error["message"]) else error}
    info = answer["info"]
    if not isinstance(info, dict) or len(json.dumps(info)) > MAX_INFO_BYTES:
        return {"error": {"code": "invalid_" + kind[:-1], "message": f"{what} gave an answer that is not valid"}}
    return {"info": info}


def inspect_model_sandboxed(path: Path, workdir: Path, limits: SandboxLimits | None = None) -> dict:
    """Open a model upload in the sandbox; {"info": ...} or {"error": {"code", "message"}}."""
    return inspect_sandboxed("models", path, workdir, limits=limits)
