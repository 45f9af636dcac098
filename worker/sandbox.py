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

Settings (environment): DISTILLERY_SANDBOX = auto (default) | bwrap | unshare | none;
DISTILLERY_SANDBOX_CGROUP = path of the delegated parent cgroup (optional); DISTILLERY_SANDBOX_WALL_S,
DISTILLERY_SANDBOX_CPU_S and DISTILLERY_SANDBOX_MEMORY_BYTES override the default limits.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]  # the project: app/ and worker/ live here
CODE_DIRS = ("app", "worker")
ENV_PASSTHROUGH = ("LANG", "LC_ALL", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "TZ")
GiB = 1024**3


@dataclass
class SandboxLimits:
    """Limits of one sandboxed run."""

    wall_s: float = 600.0  # wall clock; the process group is killed after it
    cpu_s: int | None = 1200  # RLIMIT_CPU (all threads together): SIGXCPU past it
    memory_bytes: int | None = 8 * GiB  # RLIMIT_AS on CPU runs, cgroup memory.max where available
    gpu: bool = False  # the child may use the GPU: no RLIMIT_AS, /dev/nvidia* visible
    max_file_bytes: int | None = 64 * GiB  # RLIMIT_FSIZE: no single file larger than this


def limits_from_env(base: SandboxLimits | None = None) -> SandboxLimits:
    """`base` (default SandboxLimits()) with DISTILLERY_SANDBOX_WALL_S / _CPU_S / _MEMORY_BYTES applied."""
    limits = base or SandboxLimits()
    for field_name, var, cast in (
        ("wall_s", "DISTILLERY_SANDBOX_WALL_S", float),
        ("cpu_s", "DISTILLERY_SANDBOX_CPU_S", int),
        ("memory_bytes", "DISTILLERY_SANDBOX_MEMORY_BYTES", int),
    ):
        if os.environ.get(var):
            setattr(limits, field_name, cast(os.environ[var]))
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
            if _looks_like_oom(self.stderr):
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


def _looks_like_oom(text: str) -> bool:
    low = text.lower()
    return any(
        s in low
        for s in (
            "memoryerror",
            "can't allocate memory",
            "cannot allocate memory",
            "std::bad_alloc",
            "out of memory",
        )
    )


def _last_error_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


def configured_mechanism() -> str:
    """The sandbox mechanism to use: DISTILLERY_SANDBOX, or the best that works here."""
    wanted = os.environ.get("DISTILLERY_SANDBOX", "auto").strip().lower() or "auto"
    if wanted not in ("auto", "bwrap", "unshare", "none"):
        raise ValueError(f"DISTILLERY_SANDBOX must be auto, bwrap, unshare or none, not {wanted!r}")
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
    argv: list[str], job_dir: Path, limits: SandboxLimits, readonly_files: dict[Path, Path]
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
        for extra in ("/proc/driver/nvidia", "/sys/bus/pci", "/sys/devices"):
            if os.path.exists(extra):
                cmd += ["--ro-bind", extra, extra]
    cmd += ["--bind", str(job_dir), str(job_dir)]
    for inside, src in readonly_files.items():
        cmd += ["--ro-bind", str(src), str(inside)]
    cmd += ["--chdir", str(job_dir), "--"]
    return cmd + argv


def _cgroup_parent() -> Path | None:
    raw = os.environ.get("DISTILLERY_SANDBOX_CGROUP")
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
        return group
    except OSError as exc:
        logger.warning("cannot create sandbox cgroup under %s: %s", parent, exc)
        return None


def _preexec(limits: SandboxLimits, use_rlimit_as: bool, cgroup: Path | None):
    def setup() -> None:  # runs in the child between fork and exec: only async-signal-safe-ish work
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


def run_sandboxed(
    module: str,
    args: list[str],
    job_dir: Path,
    limits: SandboxLimits | None = None,
    mechanism: str | None = None,
    readonly_files: dict[Path, Path] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SandboxResult:
    """Run `python -m module *args` sandboxed, with only `job_dir` visible and writable.

    `should_stop` is polled twice a second; when it says so (a cancelled job, a worker shutting down) the child
    is killed and SandboxError("stopped") is raised.

    `readonly_files` maps paths inside job_dir to files outside it that the child may read but not change:
    bind-mounted read-only under bwrap (no copy), copied otherwise.
    """
    limits = limits or SandboxLimits()
    mechanism = mechanism or configured_mechanism()
    job_dir = Path(job_dir).resolve()
    readonly_files = {Path(k).resolve(): Path(v).resolve() for k, v in (readonly_files or {}).items()}
    for inside, src in readonly_files.items():
        if not inside.is_relative_to(job_dir):
            raise ValueError(f"{inside} is not inside the sandbox folder {job_dir}")
        if inside.exists() or inside.is_symlink():
            inside.unlink()
        if mechanism == "bwrap":
            inside.touch()  # the mount point
        else:
            shutil.copyfile(src, inside)
    argv = [sys.executable, "-m", module, *args]
    if mechanism == "bwrap":
        cmd = _bwrap_command(argv, job_dir, limits, readonly_files)
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
    proc = subprocess.Popen(
        cmd,
        cwd=job_dir,
        env=child_env(limits),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
        preexec_fn=_preexec(limits, use_rlimit_as, cgroup),
    )
    timed_out = stopped = False
    deadline = time.monotonic() + limits.wall_s
    try:
        while True:
            try:
                # Retrying communicate() after its timeout loses no output (subprocess docs).
                stdout, stderr = proc.communicate(timeout=max(0.01, min(0.5, deadline - time.monotonic())))
                break
            except subprocess.TimeoutExpired:
                stopped = should_stop is not None and should_stop()
                timed_out = time.monotonic() >= deadline
                if stopped or timed_out:
                    _kill_group(proc)
                    stdout, stderr = proc.communicate()
                    break
    finally:
        if proc.poll() is None:
            _kill_group(proc)
            proc.wait()
        if cgroup is not None:
            _remove_cgroup(cgroup)
    if stopped:
        raise SandboxError("stopped", "the sandboxed run was stopped because the job was cancelled or handed back")
    result = SandboxResult(proc.returncode, stdout, stderr, timed_out, mechanism, capped, limits)
    if result.returncode != 0:
        logger.info("sandboxed %s exited with %s (%s): %s", module, result.returncode, mechanism, stderr[-2000:])
    return result


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _remove_cgroup(group: Path) -> None:
    try:
        for pid in (group / "cgroup.procs").read_text().split():
            os.kill(int(pid), signal.SIGKILL)
        group.rmdir()
    except OSError as exc:
        logger.info("could not remove sandbox cgroup %s: %s", group, exc)


# --- uses ---------------------------------------------------------------------------------------------


def inspect_model_sandboxed(path: Path, workdir: Path, limits: SandboxLimits | None = None) -> dict:
    """Open a model upload in the sandbox; {"info": ...} or {"error": {"code", "message"}}.

    `workdir` is a fresh, empty folder: the only one the child sees; the file appears in it read-only.
    """
    limits = limits or limits_from_env(SandboxLimits(wall_s=300, cpu_s=600, memory_bytes=4 * GiB))
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    inside = workdir / ("model" + Path(path).suffix)
    result = run_sandboxed(
        "worker.inspect_child",
        ["models", str(inside), "{}"],
        workdir,
        limits,
        readonly_files={inside: Path(path)},
    )
    problem = result.failure("opening the model")
    if problem is not None:
        return {"error": problem}
    answer = result.last_json()
    if "error" in answer and _looks_like_oom(answer["error"].get("message", "")):
        return {"error": memory_error("opening the model", limits)}
    return answer


def compute_teacher_outputs_sandboxed(
    teacher_path: str | Path,
    inputs_npy_paths: dict[str, str | Path],
    out_dir: str | Path,
    limits: SandboxLimits | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict:
    """Teacher logits for each named input array, computed in the sandbox; see worker/teacher_child.py.

    `inputs_npy_paths` maps names (e.g. "train", "eval") to .npy files of examples; the teacher file and the
    inputs appear read-only in `out_dir` (a folder of their own: the only one the child sees, and where it
    writes). Returns
    {"outputs": {name: path of float32 logits [N, C] .npy}, "info": {format, num_parameters, size_bytes,
    num_classes, input_shape, input_dtype, latency_ms}}. Raises SandboxError with a code and a message a
    user can act on when the teacher fails, hangs, or breaks a limit.
    """
    limits = limits or limits_from_env()
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    teacher_inside = out / ("teacher" + Path(teacher_path).suffix)
    readonly = {teacher_inside: Path(teacher_path)}
    inputs_inside = {}
    for name, src in inputs_npy_paths.items():
        if not name.isidentifier():
            raise ValueError(f"input names must be identifiers, not {name!r}")
        dest = out / f"input-{name}.npy"
        if Path(src).resolve() != dest:
            readonly[dest] = Path(src)
        inputs_inside[name] = str(dest)
    spec = {
        "teacher": str(teacher_inside),
        "inputs": inputs_inside,
        "out_dir": str(out),
        "device": "cuda" if limits.gpu else "cpu",
    }
    (out / "request.json").write_text(json.dumps(spec))
    result = run_sandboxed(
        "worker.teacher_child",
        [str(out / "request.json")],
        out,
        limits,
        readonly_files=readonly,
        should_stop=should_stop,
    )
    problem = result.failure("the teacher")
    if problem is not None:
        raise SandboxError(problem["code"], problem["message"])
    answer = result.last_json()
    if "error" in answer:
        err = answer["error"]
        if _looks_like_oom(err.get("message", "")):
            err = memory_error("the teacher", limits)
        raise SandboxError(err["code"], err["message"])
    outputs = {}
    for name in inputs_inside:
        path = out / f"logits-{name}.npy"
        # The child could have left a link to a file only the worker may read: accept plain files only.
        if path.is_symlink() or not path.is_file():
            raise SandboxError("sandbox_crash", f"the teacher produced no outputs for {name}")
        outputs[name] = str(path)
    return {"outputs": outputs, "info": answer.get("info", {})}


class SandboxError(Exception):
    """A sandboxed model failed; `code` and `message` are for the user."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message
