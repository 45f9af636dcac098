"""Which sandbox mechanism runs a child (bwrap, unshare, none) and the command line that starts it under each.

bwrap's root holds only the read-only Python install, its site-packages and the project's code (never the data
directory), minimal /proc and /dev, a private /tmp and the job's folder; the child's environment carries no
settings and no credentials.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from worker.sandbox.confinement import SandboxLimits, sandbox_settings

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]  # the project: app/, contract/ and worker/ live here
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


def configured_mechanism() -> str:
    """The sandbox mechanism to use: DISTILLERY_SANDBOX, or the best that works here."""
    wanted = sandbox_settings().sandbox
    if wanted != "auto":
        return wanted
    return best_mechanism()


@functools.cache
def best_mechanism() -> str:
    """Probe once per process: bwrap if it can create namespaces here, else unshare, else none."""
    if shutil.which("bwrap") and _probe(["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "true"]):
        return "bwrap"
    if shutil.which("unshare") and _probe(unshare_prefix() + ["true"]):
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


def unshare_prefix() -> list[str]:
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


def bwrap_command(
    argv: list[str],
    job_dir: Path,
    limits: SandboxLimits,
    readonly_files: dict[Path, Path],
    writable_dirs: list[Path] | None = None,
) -> list[str]:
    """bwrap's argv: a root of the read-only Python and project code, `job_dir` and `writable_dirs` writable."""
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


def sandbox_argv(
    mechanism: str,
    argv: list[str],
    job_dir: Path,
    limits: SandboxLimits,
    readonly_files: dict[Path, Path],
    writable_dirs: list[Path],
) -> list[str]:
    """The command that runs `argv` under `mechanism`."""
    if mechanism == "bwrap":
        return bwrap_command(argv, job_dir, limits, readonly_files, writable_dirs)
    if mechanism == "unshare":
        return unshare_prefix() + argv
    if mechanism == "none":
        return argv
    raise ValueError(f"unknown sandbox mechanism {mechanism!r}")
