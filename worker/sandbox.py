"""Run code-bearing model files (TorchScript, torch.export) in a child process that sees only one folder.

A TorchScript archive can carry code: it can read any file it can name (`torch.from_file`), loop for
ever or allocate without bound. So the worker never opens one in its own process. It runs a Python
entry point (`python -m worker.<module> ...`) in a sandbox, by the best mechanism the host offers:

- "bwrap" (bubblewrap): new user, mount, PID, network, IPC and UTS namespaces (`--unshare-all`: no
  network at all), a root filesystem holding only the read-only Python install, its site-packages and
  the project's code (`app/`, `worker/`; not the data directory), minimal /proc and /dev, a private
  tmpfs /tmp, and ONE read-write folder: the job's (bound at its own path, so paths need no
  translating). `--die-with-parent` ends the sandbox when the worker dies.
- "unshare": Linux namespaces through util-linux `unshare` (no network, own PID namespace) but the
  whole filesystem stays visible; used only when bubblewrap is missing, with a warning.
- "none": a plain child process; a loud warning says the file system and network are not isolated.

Whatever the mechanism, the child gets a minimal environment (no DISTILLERY_* settings, so no database
or broker credentials), a wall-clock timeout (the whole process group is killed), RLIMIT_CPU, and a
memory cap: RLIMIT_AS on a CPU-only run. RLIMIT_AS breaks CUDA (it reserves huge virtual ranges), so a
GPU run is capped by a cgroup v2 `memory.max` when DISTILLERY_SANDBOX_CGROUP names a writable, delegated
cgroup (one with the memory controller in its cgroup.subtree_control and no processes of its own);
without one, only the timeouts and the GPU's own memory hold (see README, Deployment).

Settings (app/settings.py, read afresh on each use so that a changed environment takes effect):
DISTILLERY_SANDBOX = auto (default) | bwrap | unshare | none; DISTILLERY_SANDBOX_CGROUP = path of the delegated
parent cgroup (optional); DISTILLERY_SANDBOX_WALL_S, DISTILLERY_SANDBOX_CPU_S and DISTILLERY_SANDBOX_MEMORY_BYTES
lower the limits.
"""

from __future__ import annotations

import collections
import ctypes
import functools
import json
import logging
import os
import queue
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from worker.scrub import looks_like_out_of_memory, scrub_error

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]  # the project: app/, contract/ and worker/ live here
CODE_DIRS = ("app", "contract", "worker")
ENV_PASSTHROUGH = (
    "LANG",
    "LC_ALL",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
    "TZ",
    # Where a GPU image keeps the driver's libraries (NVIDIA's container toolkit sets these).
    "LD_LIBRARY_PATH",
    "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES",
)
GiB = 1024**3


@dataclass
class SandboxLimits:
    """Limits of one sandboxed run."""

    wall_s: float = 600.0  # wall clock; the process group is killed after it
    cpu_s: int | None = 1200  # RLIMIT_CPU (all threads together): SIGXCPU past it
    memory_bytes: int | None = 8 * GiB  # RLIMIT_AS on CPU runs, cgroup memory.max where available
    gpu: bool = False  # the child may use the GPU: no RLIMIT_AS, /dev/nvidia* visible
    max_file_bytes: int | None = 64 * GiB  # RLIMIT_FSIZE: no single file larger than this
    max_processes: int | None = 4096  # cgroup pids.max, where a delegated cgroup is configured


def _settings():
    from app.settings import Settings

    return Settings()  # not the cached instance: tests and operators change the environment


def limits_from_env(base: SandboxLimits | None = None) -> SandboxLimits:
    """`base` (default SandboxLimits()) with DISTILLERY_SANDBOX_WALL_S / _CPU_S / _MEMORY_BYTES applied."""
    limits = base or SandboxLimits()
    settings = _settings()
    for field_name, value in (
        ("wall_s", settings.sandbox_wall_s),
        ("cpu_s", settings.sandbox_cpu_s),
        ("memory_bytes", settings.sandbox_memory_bytes),
    ):
        if value is not None:
            setattr(limits, field_name, value)
    return limits


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


def configured_mechanism() -> str:
    """The sandbox mechanism to use: DISTILLERY_SANDBOX, or the best that works here."""
    wanted = _settings().sandbox
    if wanted != "auto":
        return wanted
    return best_mechanism()


@functools.cache
def best_mechanism() -> str:
    """Probe once per process: bwrap if it can create namespaces here, else unshare, else none."""
    if shutil.which("bwrap") and _probe(["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "true"]):
        return "bwrap"
    if shutil.which("unshare") and _probe(_unshare_prefix() + ["true"]):
        logger.warning(
            "bubblewrap (bwrap) is not available: model files run with namespaces (no network) "
            "but can read the whole file system; install bubblewrap"
        )
        return "unshare"
    logger.warning(
        "no sandbox available (neither bwrap nor unshare works): model files run in a plain child "
        "process with time and memory limits only; they can read files and use the network. "
        "Install bubblewrap"
    )
    return "none"


def _probe(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _unshare_prefix() -> list[str]:
    return [
        "unshare",
        "--user",
        "--map-root-user",
        "--net",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
    ]


def _readonly_paths() -> list[Path]:
    """What the child must read: the Python install, its site-packages, and the project's code only."""
    paths: set[Path] = {Path(sys.base_prefix), Path(sys.prefix), Path(sys.executable).resolve().parent.parent}
    for entry in sys.path:
        if entry and os.path.isdir(entry):
            paths.add(Path(entry).resolve())
    paths.update(ROOT / name for name in CODE_DIRS)
    root = ROOT.resolve()
    # Never the project root itself (a default data dir may live there), only what is inside it.
    keep = sorted(p for p in paths if p != root and p != Path("/") and p.exists())
    # Drop paths already inside another kept path.
    result: list[Path] = []
    for p in keep:
        if not any(p != q and p.is_relative_to(q) for q in keep):
            result.append(p)
    return result


def _bwrap_command(
    argv: list[str],
    job_dir: Path,
    limits: SandboxLimits,
    readonly_files: dict[Path, Path],
    writable_dirs: list[Path] | None = None,
) -> list[str]:
    cmd = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    # The private /tmp comes first: later binds land on top of it, so a venv or job folder under /tmp
    # (a CI clone, pytest's tmp_path) stays visible instead of being hidden by the empty tmpfs.
    cmd += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for top in ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        src = Path("/") / top
        if src.is_symlink():
            cmd += ["--symlink", os.readlink(src), str(src)]
        elif src.is_dir():
            cmd += ["--ro-bind", str(src), str(src)]
    if Path("/etc/ld.so.cache").exists():
        cmd += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    for path in _readonly_paths():
        if not path.is_relative_to("/usr"):
            cmd += ["--ro-bind", str(path), str(path)]
    if limits.gpu:
        for dev in sorted(Path("/dev").glob("nvidia*")):
            cmd += ["--dev-bind", str(dev), str(dev)]
        for extra in ("/proc/driver/nvidia", "/sys/bus/pci", "/sys/devices", "/sys/module/nvidia"):
            if os.path.exists(extra):
                cmd += ["--ro-bind", extra, extra]
    cmd += ["--bind", str(job_dir), str(job_dir)]
    for extra_dir in writable_dirs or ():
        cmd += ["--bind", str(extra_dir), str(extra_dir)]
    for inside, src in readonly_files.items():
        cmd += ["--ro-bind", str(src), str(inside)]
    cmd += ["--chdir", str(job_dir), "--"]
    return cmd + argv


def _cgroup_parent() -> Path | None:
    raw = _settings().sandbox_cgroup
    if not raw:
        return None
    parent = Path(raw)
    if (parent / "cgroup.subtree_control").exists() and os.access(parent, os.W_OK):
        controls = (parent / "cgroup.subtree_control").read_text()
        if "memory" in controls.split():
            return parent
    logger.warning(
        "DISTILLERY_SANDBOX_CGROUP=%s is not a writable cgroup v2 folder with the memory controller "
        "delegated; sandboxed model runs are not memory-capped by a cgroup",
        raw,
    )
    return None


def _make_cgroup(limits: SandboxLimits) -> Path | None:
    parent = _cgroup_parent()
    if parent is None or limits.memory_bytes is None:
        return None
    group = parent / f"sandbox-{uuid.uuid4().hex[:12]}"
    try:
        group.mkdir()
        (group / "memory.max").write_text(str(limits.memory_bytes))
        if (group / "memory.swap.max").exists():
            (group / "memory.swap.max").write_text("0")
        if limits.max_processes is not None and (group / "pids.max").exists():
            (group / "pids.max").write_text(str(limits.max_processes))
        return group
    except OSError as exc:
        logger.warning("cannot create sandbox cgroup under %s: %s", parent, exc)
        return None


def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - every Linux libc has prctl
        return None


PR_SET_PDEATHSIG = 1


def _preexec(limits: SandboxLimits, use_rlimit_as: bool, cgroup: Path | None):
    libc = _libc()  # resolved before the fork: the child only calls it

    def setup() -> None:  # runs in the child between fork and exec: only async-signal-safe-ish work
        if libc is not None:
            # The child dies with the worker, whatever the mechanism (bwrap also has --die-with-parent).
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if cgroup is not None:
            with open(cgroup / "cgroup.procs", "w") as fh:
                fh.write(str(os.getpid()))
        if limits.cpu_s is not None:
            resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 5))
        if use_rlimit_as and limits.memory_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        if limits.max_file_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limits.max_file_bytes, limits.max_file_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return setup


def child_env(limits: SandboxLimits) -> dict[str, str]:
    """The child's environment: no settings, no credentials."""
    env = {k: os.environ[k] for k in ENV_PASSTHROUGH if k in os.environ}
    env.update(
        {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": "/tmp",
            "PYTHONPATH": str(ROOT),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "TMPDIR": "/tmp",
        }
    )
    if not limits.gpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


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
        _kill_group(self.proc)
        if self.cgroup is not None:
            _kill_cgroup(self.cgroup)

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
            _kill_group(self.proc)  # stragglers the child left in its group
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self.cgroup is not None:
            _remove_cgroup(self.cgroup)
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
    argv = [sys.executable, "-m", module, *args]
    if mechanism == "bwrap":
        cmd = _bwrap_command(argv, job_dir, limits, readonly_files, writable)
    elif mechanism == "unshare":
        cmd = _unshare_prefix() + argv
    elif mechanism == "none":
        cmd = argv
    else:
        raise ValueError(f"unknown sandbox mechanism {mechanism!r}")
    cgroup = _make_cgroup(limits)
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
        preexec_fn=_preexec(limits, use_rlimit_as, cgroup),
    )
    return SandboxedProcess(proc, stderr_file, cgroup, mechanism, capped, limits)


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


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_cgroup(group: Path) -> None:
    try:
        for pid in (group / "cgroup.procs").read_text().split():
            os.kill(int(pid), signal.SIGKILL)
    except OSError:
        pass


def _remove_cgroup(group: Path) -> None:
    _kill_cgroup(group)
    try:
        group.rmdir()
    except OSError as exc:
        logger.info("could not remove sandbox cgroup %s: %s", group, exc)


# --- uses ---------------------------------------------------------------------------------------------


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


class SandboxError(Exception):
    """A sandboxed model failed; `code` and `message` are for the user."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message
