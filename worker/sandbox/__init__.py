"""Run code-bearing files' readers (TorchScript, torch.export, every upload) in a child that sees only one folder.

A TorchScript archive can carry code: it can read any file it can name (`torch.from_file`), loop for
ever or allocate without bound. So the worker never opens one in its own process. It runs a Python
entry point (`python -m worker.<module> ...`) in a sandbox, by the best mechanism the host offers:

- "bwrap" (bubblewrap): new user, mount, PID, network, IPC and UTS namespaces (`--unshare-all`: no
  network at all), a root filesystem holding only the read-only Python install, its site-packages and
  the project's code (`app/`, `contract/`, `worker/`; not the data directory), minimal /proc and /dev, a private
  tmpfs /tmp, and ONE read-write folder: the job's (bound at its own path, so paths need no
  translating). `--die-with-parent` ends the sandbox when the worker dies.
- "unshare": Linux namespaces through util-linux `unshare` (no network, own PID namespace) but the
  whole filesystem stays visible; used only when bubblewrap is missing, with a warning.
- "none": a plain child process; a loud warning says the file system and network are not isolated.

Whatever the mechanism, the child gets a minimal environment (no DISTILLERY_* settings, so no database
or broker credentials), a wall-clock timeout (the whole process group is killed), RLIMIT_CPU, and a
memory cap: RLIMIT_AS on a CPU-only run, a delegated cgroup's memory.max where one is configured
(see confinement.py and README, Deployment).

Settings (app/settings.py, read afresh on each use so that a changed environment takes effect):
DISTILLERY_SANDBOX = auto (default) | bwrap | unshare | none; DISTILLERY_SANDBOX_CGROUP = path of the delegated
parent cgroup (optional); DISTILLERY_SANDBOX_WALL_S, DISTILLERY_SANDBOX_CPU_S and DISTILLERY_SANDBOX_MEMORY_BYTES
lower the limits.

    confinement        SandboxLimits, limits_from_env, rlimits and cgroups applied to the child
    mechanisms         configured_mechanism / best_mechanism, bwrap's argv, the child's environment
    sandboxed_process  SandboxedProcess, spawn_sandboxed: a running child, its lines, killing its group
    child_results      SandboxResult, SandboxError, memory_error: how a child ended, for the user
    one_shot           run_sandboxed, inspect_sandboxed: a child run to its one answer
"""

from worker.sandbox.child_results import SandboxError, SandboxResult, memory_error
from worker.sandbox.confinement import GiB, SandboxLimits, limits_from_env
from worker.sandbox.mechanisms import best_mechanism, bwrap_command, child_env, configured_mechanism
from worker.sandbox.one_shot import inspect_model_sandboxed, inspect_sandboxed, run_sandboxed
from worker.sandbox.sandboxed_process import SandboxedProcess, spawn_sandboxed

__all__ = [
    "GiB",
    "SandboxError",
    "SandboxLimits",
    "SandboxResult",
    "SandboxedProcess",
    "best_mechanism",
    "bwrap_command",
    "child_env",
    "configured_mechanism",
    "inspect_model_sandboxed",
    "inspect_sandboxed",
    "limits_from_env",
    "memory_error",
    "run_sandboxed",
    "spawn_sandboxed",
]
