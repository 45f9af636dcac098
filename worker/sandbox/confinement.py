"""The limits of a sandboxed child and how they are applied: rlimits, a delegated cgroup v2, death with the parent.

RLIMIT_AS breaks CUDA (it reserves huge virtual ranges), so a GPU run is capped by a cgroup v2 `memory.max` when
DISTILLERY_SANDBOX_CGROUP names a writable, delegated cgroup (one with the memory controller in its
cgroup.subtree_control and no processes of its own); without one, only the timeouts and the GPU's own memory hold.
"""

from __future__ import annotations

import ctypes
import logging
import os
import resource
import signal
import uuid
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

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


def sandbox_settings():
    """The settings as the environment says now (DISTILLERY_SANDBOX*)."""
    from app.settings import Settings

    return Settings()  # not the cached instance: tests and operators change the environment


def limits_from_env(base: SandboxLimits | None = None) -> SandboxLimits:
    """`base` (default SandboxLimits()) with DISTILLERY_SANDBOX_WALL_S / _CPU_S / _MEMORY_BYTES applied."""
    limits = base or SandboxLimits()
    settings = sandbox_settings()
    for field_name, value in (
        ("wall_s", settings.sandbox_wall_s),
        ("cpu_s", settings.sandbox_cpu_s),
        ("memory_bytes", settings.sandbox_memory_bytes),
    ):
        if value is not None:
            setattr(limits, field_name, value)
    return limits


def _cgroup_parent() -> Path | None:
    raw = sandbox_settings().sandbox_cgroup
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


def make_cgroup(limits: SandboxLimits) -> Path | None:
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


def preexec(limits: SandboxLimits, use_rlimit_as: bool, cgroup: Path | None):
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


def kill_cgroup(group: Path) -> None:
    try:
        for pid in (group / "cgroup.procs").read_text().split():
            os.kill(int(pid), signal.SIGKILL)
    except OSError:
        pass


def remove_cgroup(group: Path) -> None:
    kill_cgroup(group)
    try:
        group.rmdir()
    except OSError as exc:
        logger.info("could not remove sandbox cgroup %s: %s", group, exc)
