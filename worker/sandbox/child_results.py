"""What a finished sandboxed child did, and the errors a user sees about it (scrubbed of paths and stacks)."""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass, field

from worker.sandbox.confinement import GiB, SandboxLimits
from worker.scrub import looks_like_out_of_memory


@dataclass
class SandboxResult:
    """What a sandboxed child did."""

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    mechanism: str
    memory_capped_by: str | None  # "rlimit_as" | "cgroup" | None
    limits: SandboxLimits = field(default_factory=SandboxLimits)

    def last_json(self) -> dict | None:
        """The last stdout line that is a JSON object (the child's answer), or None."""
        for line in reversed(self.stdout.splitlines()):
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    return None
        return None

    def failure(self, what: str) -> dict | None:
        """{"code", "message"} when the child was stopped by a limit or crashed; None when it answered."""
        lim = self.limits
        if self.timed_out:
            return {
                "code": "sandbox_timeout",
                "message": f"{what} ran longer than {lim.wall_s:g} s and was stopped",
            }
        # Killed by a signal: -N from Popen, or 128 + N where bwrap's PID-1 reports its child's death.
        if self.returncode in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
            return {
                "code": "sandbox_cpu_limit",
                "message": f"{what} used more than {lim.cpu_s} s of CPU time and was stopped",
            }
        if self.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL) and self.memory_capped_by == "cgroup":
            return {
                "code": "sandbox_memory_limit",
                "message": f"{what} was killed, most likely for using more than {_human(lim.memory_bytes)} of memory",
            }
        if self.returncode != 0 or self.last_json() is None:
            tail = _last_error_line(self.stderr)
            if looks_like_out_of_memory(self.stderr):
                return memory_error(what, lim)
            return {
                "code": "sandbox_crash",
                "message": f"{what} crashed (exit status {self.returncode})" + (f": {tail}" if tail else ""),
            }
        return None


def memory_error(what: str, limits: SandboxLimits) -> dict:
    """The error of a child that hit its memory cap."""
    return {
        "code": "sandbox_memory_limit",
        "message": f"{what} tried to use more than the {_human(limits.memory_bytes)} of memory it may use",
    }


def _human(n: int | None) -> str:
    if n is None:
        return "available amount"
    return f"{n / GiB:.3g} GiB" if n >= GiB else f"{n / 1024**2:.3g} MiB"


def _last_error_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


class SandboxError(Exception):
    """A sandboxed model failed; `code` and `message` are for the user."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message
