"""A running sandboxed child: started under its mechanism and limits, its output read, killed as a group."""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from worker.sandbox.child_results import SandboxResult
from worker.sandbox.confinement import SandboxLimits, kill_cgroup, make_cgroup, preexec, remove_cgroup
from worker.sandbox.mechanisms import child_env, configured_mechanism, sandbox_argv

logger = logging.getLogger(__name__)


MAX_LINE_BYTES = 8 * 1024**2  # a child's protocol line (the report is the largest) may not be longer
STDERR_TAIL_BYTES = 64 * 1024


class SandboxedProcess:
    """A running sandboxed child: its stdout as a queue of lines, its stderr in a private file.

    Nothing the child writes is trusted: lines longer than MAX_LINE_BYTES are dropped, stderr is kept in a file
    the child cannot see (RLIMIT_FSIZE bounds it) and only its tail is read.
    """

    def __init__(
        self,
        proc: subprocess.Popen,
        stderr_file,
        cgroup: Path | None,
        mechanism: str,
        capped: str | None,
        limits: SandboxLimits,
    ):
        self.proc, self.stderr_file, self.cgroup = proc, stderr_file, cgroup
        self.mechanism, self.memory_capped_by, self.limits = mechanism, capped, limits
        self.started = time.monotonic()
        self.lines: queue.Queue[str | None] = queue.Queue(maxsize=10_000)
        self.dropped_lines = 0
        self._reader = threading.Thread(target=self._read, name="sandbox-stdout", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        stream = self.proc.stdout
        try:
            while True:
                raw = stream.readline(MAX_LINE_BYTES + 1)
                if not raw:
                    break
                if not raw.endswith(b"\n") and len(raw) > MAX_LINE_BYTES:
                    self.dropped_lines += 1
                    while raw and not raw.endswith(b"\n"):  # skip the rest of the over-long line
                        raw = stream.readline(MAX_LINE_BYTES)
                    continue
                self.lines.put(raw.decode("utf-8", errors="replace").rstrip("\n"))
        except (OSError, ValueError):
            pass
        finally:
            self.lines.put(None)  # end of output

    def next_line(self, timeout: float) -> str | None:
        """The next stdout line; "" when none came within `timeout`; None once the output has ended."""
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return ""

    @property
    def deadline_passed(self) -> bool:
        """Whether the wall-clock limit is over."""
        return time.monotonic() - self.started >= self.limits.wall_s

    def kill(self) -> None:
        """SIGKILL the child's whole process group (and its cgroup)."""
        kill_group(self.proc)
        if self.cgroup is not None:
            kill_cgroup(self.cgroup)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit status."""
        return self.proc.wait(timeout=timeout)

    def stderr_tail(self) -> str:
        """The last STDERR_TAIL_BYTES of what the child wrote to stderr."""
        try:
            size = self.stderr_file.seek(0, os.SEEK_END)
            self.stderr_file.seek(max(0, size - STDERR_TAIL_BYTES))
            return self.stderr_file.read().decode("utf-8", errors="replace")
        except (OSError, ValueError):
            return ""

    def close(self) -> None:
        """Kill anything left, join the reader, remove the cgroup, close the stderr file."""
        if self.proc.poll() is None:
            self.kill()
            self.proc.wait()
        else:
            kill_group(self.proc)  # stragglers the child left in its group
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self.cgroup is not None:
            remove_cgroup(self.cgroup)
        self.stderr_file.close()

    def result(self, stdout_lines: list[str], timed_out: bool) -> SandboxResult:
        """A SandboxResult of the finished child."""
        return SandboxResult(
            self.proc.returncode,
            "\n".join(stdout_lines),
            self.stderr_tail(),
            timed_out,
            self.mechanism,
            self.memory_capped_by,
            self.limits,
        )


def _place_readonly_files(readonly_files: dict[Path, Path], job_dir: Path, mechanism: str) -> None:
    """Make each inside path: a mount point for bwrap, a symbolic link under the mechanisms that isolate no files."""
    for inside, src in readonly_files.items():
        if not inside.is_relative_to(job_dir):
            raise ValueError(f"{inside} is not inside the sandbox folder {job_dir}")
        inside.parent.mkdir(parents=True, exist_ok=True)
        if inside.exists() or inside.is_symlink():
            inside.unlink()
        if mechanism == "bwrap":
            inside.touch()  # the mount point
        else:
            inside.symlink_to(src)


def spawn_sandboxed(
    module: str,
    args: list[str],
    job_dir: Path,
    limits: SandboxLimits | None = None,
    mechanism: str | None = None,
    readonly_files: dict[Path, Path] | None = None,
    writable_dirs: list[Path] | None = None,
) -> SandboxedProcess:
    """Start `python -m module *args` sandboxed: `job_dir` (and `writable_dirs`) writable, nothing else of ours.

    `readonly_files` maps paths inside job_dir to files outside it that the child may read but not change:
    bind-mounted read-only under bwrap (no copy); under the weaker mechanisms, which isolate no files anyway, a
    symbolic link.
    """
    limits = limits or SandboxLimits()
    mechanism = mechanism or configured_mechanism()
    job_dir = Path(job_dir).resolve()
    writable = [Path(d).resolve() for d in (writable_dirs or ())]
    readonly_files = {Path(k).absolute(): Path(v).resolve() for k, v in (readonly_files or {}).items()}
    _place_readonly_files(readonly_files, job_dir, mechanism)
    cmd = sandbox_argv(mechanism, [sys.executable, "-m", module, *args], job_dir, limits, readonly_files, writable)
    cgroup = make_cgroup(limits)
    use_rlimit_as = not limits.gpu
    capped = "cgroup" if cgroup is not None else ("rlimit_as" if use_rlimit_as and limits.memory_bytes else None)
    if limits.gpu and cgroup is None:
        logger.warning(
            "GPU sandbox run without a memory cgroup: only the time limits and the GPU's memory "
            "hold (set DISTILLERY_SANDBOX_CGROUP)"
        )
    stderr_file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by SandboxedProcess.close
    proc = subprocess.Popen(
        cmd,
        cwd=job_dir,
        env=child_env(limits),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr_file,
        start_new_session=True,
        preexec_fn=preexec(limits, use_rlimit_as, cgroup),
    )
    return SandboxedProcess(proc, stderr_file, cgroup, mechanism, capped, limits)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group the child leads (it started a new session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
