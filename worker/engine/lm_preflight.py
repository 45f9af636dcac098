"""Before a causal-LM job's first teacher pass: a smoke step on a few rows, a memory check, and an estimate.

The smoke step runs one forward and backward of the student and two teacher forwards (the second timed), so that
a job that cannot run fails in seconds, not after the teacher pass; the report counts those forwards apart from
the signal's. The memory check compares the weights, gradients and AdamW states the job holds (teacher, student
and its SFT-baseline copy) with the memory the job may use; when they do not fit together, an online method falls
back to `offline` (the teacher's signal cached first, the teacher freed before the students train), and
`on_policy`, which needs the live teacher to score the student's own samples, fails with `limit_exceeded`. The
estimate states the signal's bytes and the teacher's seconds, extrapolated from the timed forward; the report
sets them beside what the job actually spent.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import resource
import time
from collections.abc import Callable

import torch

from worker.engine.config import ProgressEvent
from worker.engine.errors import EngineError
from worker.engine.lm_data import LMBatch, LMRows, encode
from worker.engine.lm_losses import OBJECTIVES
from worker.engine.lm_signal import estimate_bytes
from worker.engine.lm_train import LIVE_TEACHER

logger = logging.getLogger(__name__)

TEACHER_FIRST = ("offline", "seq_kd")  # methods whose teacher can be freed once its outputs are cached

SMOKE_ROWS = 4
TEACHER_ROWS = 32  # teacher_topk's batch
HEADROOM = 0.8  # of the free memory, for what is not counted: activations, the allocator's slack
ONLINE = OBJECTIVES  # the online logit methods, which can fall back to the cached signal


def parameter_bytes(model: torch.nn.Module) -> int:
    """Bytes of a model's parameters, tied ones counted once."""
    return sum({id(p): p.numel() * p.element_size() for p in model.parameters()}.values())


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _cgroup_available() -> int | None:
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as f:
            current = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(0, int(limit) - current)


def _address_space_available() -> int | None:
    """What RLIMIT_AS (the sandbox's memory cap where no cgroup is) leaves of the address space."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    except (OSError, StopIteration, ValueError):
        return None
    return max(0, soft - size)


def free_memory(device: torch.device) -> int | None:
    """Bytes the job can still allocate on `device` (the GPU's free memory; on the CPU the least of what the
    machine, the cgroup and the address-space limit leave); None when it cannot be read."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    known = [v for v in (_meminfo_available(), _cgroup_available(), _address_space_available()) if v is not None]
    return min(known) if known else None


def memory_check(teacher, student, limit: int | None = None) -> dict:
    """Whether teacher, student, its baseline copy, one student's gradients and AdamW states fit together;
    `limit` replaces the measured memory (the models' own bytes counted in it)."""
    device = next(student.parameters()).device
    t_bytes, s_bytes = parameter_bytes(teacher), parameter_bytes(student)
    # Student and baseline weights, plus gradients and AdamW's two moments of the one that trains.
    needed = t_bytes + 5 * s_bytes
    if limit is None:
        free = free_memory(device)
        # The loaded models already take their share of the memory that is no longer free.
        limit = None if free is None else free + t_bytes + s_bytes
    fits = True if limit is None else needed <= HEADROOM * limit
    return {
        "device": str(device),
        "teacher_bytes": t_bytes,
        "student_bytes": s_bytes,
        "needed_bytes": needed,
        "available_bytes": limit,
        "fits": fits,
        "counted": "weights, gradients and AdamW states; activations within the 20% headroom",
    }


def smoke_step(teacher, student, teacher_rows: LMBatch, student_rows: LMBatch) -> dict:
    """One student forward and backward on a few rows and one timed teacher forward on a batch; EngineError when
    one fails for a reason the user can act on (out of GPU memory)."""
    device = next(student.parameters()).device
    try:
        student.train()
        ids, attention = student_rows.ids.to(device), student_rows.attention.to(device)
        loss = student(input_ids=ids, attention_mask=attention.long(), labels=ids.masked_fill(~attention, -100)).loss
        loss.backward()
        student.zero_grad(set_to_none=True)
        student.eval()
        loss = float(loss.detach())
        if not math.isfinite(loss):
            raise EngineError("non_finite", f"the student's loss on the first rows is {loss}")
        teacher.eval()
        t_ids, t_attention = teacher_rows.ids.to(device), teacher_rows.attention.to(device)
        passes = 0  # the report counts them apart from the signal's passes
        with torch.no_grad():  # the second of two passes is timed: the first pays one-off allocations
            for _ in range(2):
                started = time.perf_counter()
                teacher(input_ids=t_ids, attention_mask=t_attention.long())
                passes += 1
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                seconds = time.perf_counter() - started
    except torch.OutOfMemoryError:
        raise EngineError(
            "cuda_oom", f"the GPU ran out of memory on the first {len(student_rows)} rows of up to "
            f"{student_rows.ids.shape[1]} tokens: lower max_length or use a smaller student"
        ) from None  # fmt: skip
    positions = int(t_attention.sum())
    return {
        "rows": len(student_rows),
        "student_loss": loss,
        "teacher_forward_passes": passes,
        "teacher_forward_seconds": seconds,
        "teacher_positions_per_second": positions / seconds if seconds > 0 else None,
    }


def teacher_positions(method: str, epochs: int, train: tuple[int, ...], eval_: tuple[int, ...], gen: dict):
    """Token positions the teacher will process: `train` (rows, rows without a completion, padded length, mean
    real length), `eval_` (rows, padded length, mean real length), `gen` (prompts, max_new_tokens, seq_kd
    samples, prompt tokens). Batches are trimmed to their longest row, so real lengths count, not padding."""
    rows, missing, length = train[0], train[1], train[-1]
    new, prompt = gen["max_new_tokens"], gen["prompt_tokens"]
    total = missing * (prompt + new)  # the completions the data lacks, generated
    if method == "seq_kd":
        total += rows * max(1, gen["samples"]) * (prompt + new)
    elif method == "offline":
        total += rows * length
    else:
        total += epochs * rows * length  # online: a teacher forward on every batch of every epoch
    total += eval_[0] * eval_[-1] + gen["prompts"] * (prompt + new)  # held-out signal and generations
    return total


def estimate(method: str, config, train: tuple[int, ...], eval_: tuple[int, ...], smoke: dict, vocab=None) -> dict:
    """The job's teacher cost before it runs: signal bytes (the token ids' width from `vocab`) and teacher seconds
    (from the smoke step's rate)."""
    signal = estimate_bytes(eval_[0], eval_[1], config.eval_top_k, vocab)
    if method == "offline":
        signal += estimate_bytes(train[0], train[2], config.top_k, vocab)
    gen = {
        "max_new_tokens": config.max_new_tokens,
        "samples": config.seq_kd_samples,
        "prompts": min(config.generation_prompts, eval_[0]),
        "prompt_tokens": min(eval_[-1], config.max_length),  # a mean row (prompt and completion): an upper bound
    }
    positions = teacher_positions(method, config.train.epochs, train, eval_, gen)
    rate = smoke.get("teacher_positions_per_second")
    return {
        "method": method,
        "signal_bytes": signal,
        "teacher_positions": positions,
        "teacher_seconds": positions / rate if rate else None,
        "basis": "before the cache is read: a cached signal costs neither",
    }


class TeacherClock:
    """Seconds spent in the teacher's forward calls (generation steps included), through forward hooks;
    `paused` leaves a call out (the speed measurement is not the signal's cost)."""

    def __init__(self, module: torch.nn.Module):
        self.seconds = 0.0
        self.paused = False
        self._started: float | None = None
        self._cuda = next(module.parameters()).device.type == "cuda"
        module.register_forward_pre_hook(self._start)
        module.register_forward_hook(self._stop)

    def _start(self, *_args) -> None:
        self._started = time.perf_counter()

    def _stop(self, module, *_args) -> None:
        if self._started is None or self.paused:
            return
        if self._cuda:
            torch.cuda.synchronize()  # the forward is asynchronous on a GPU; its end is when the work is done
        self.seconds += time.perf_counter() - self._started
        self._started = None


def preflight(teacher, student, rows: LMRows, eval_rows: LMRows, config, tell: Callable[[ProgressEvent], None]):
    """(the config to run, the checks): smoke step, memory check (an online method that does not fit falls back
    to offline; on_policy fails), the estimate of the teacher's cost; each told as an event before the first
    teacher pass."""
    labelled = [(p, c) for p, c in zip(rows.prompts, rows.completions, strict=True) if c is not None]
    if not labelled:
        raise EngineError("invalid_dataset", "the training data needs some rows with completions for the baseline")
    few = ([p for p, _ in labelled[:SMOKE_ROWS]], [c for _, c in labelled[:SMOKE_ROWS]])
    # The teacher is timed on a batch of the signal pass's size: its rate on 4 rows put the estimate 2-3x over.
    many = ([p for p, _ in labelled[:TEACHER_ROWS]], [c for _, c in labelled[:TEACHER_ROWS]])
    smoke = smoke_step(teacher.model, student.model, encode(teacher.tokenizer, *many, config.max_length),
                       encode(student.tokenizer, *few, config.max_length))  # fmt: skip
    memory = memory_check(teacher.model, student.model, config.memory_bytes)
    checks: dict = {"smoke": smoke, "memory": memory, "fallback": None}
    message = f"preflight: a smoke step on {smoke['rows']} rows ran; the models need {memory['needed_bytes']} bytes"
    tell(ProgressEvent("info", f"{message} of {memory['available_bytes']}", {"preflight": checks}))
    if not memory["fits"] and config.method in ONLINE:
        reason = "teacher and student do not fit in memory together: the teacher's signal is cached first, the " \
            "teacher freed"  # fmt: skip
        checks["fallback"] = {"from": config.method, "to": "offline", "reason": reason}
        train = dataclasses.replace(config.train, objective=config.method)
        config = dataclasses.replace(config, method="offline", train=train)
        tell(ProgressEvent("warning", f"{checks['fallback']['from']} falls back to offline KD: "
                           f"{checks['fallback']['reason']}", {"fallback": checks["fallback"]}))  # fmt: skip
    elif not memory["fits"] and config.method in LIVE_TEACHER:
        raise EngineError("limit_exceeded", _no_room(config.method, memory))
    elif not memory["fits"]:
        first = config.method in TEACHER_FIRST
        then = "the teacher's outputs are cached first, the teacher freed" if first else "the job may fail"
        message = f"teacher and student may not fit in memory together: {then}"
        tell(ProgressEvent("warning", message, {"memory": memory}))
    checks["estimate"] = _estimate(teacher, rows, eval_rows, config, smoke)
    seconds = checks["estimate"]["teacher_seconds"]
    message = f"estimate: the teacher signal stores up to {checks['estimate']['signal_bytes']} bytes and takes"
    tell(
        ProgressEvent("info", f"{message} about {seconds or 0:.1f} s of teacher time", {"estimate": checks["estimate"]})
    )
    return config, checks


def _no_room(method: str, memory: dict) -> str:
    """Why a method that needs the live teacher cannot run: the memory figures, and what can run instead."""
    return (
        f"{method} runs the teacher at every training step, so teacher and student must fit in memory together: "
        f"teacher {_size(memory['teacher_bytes'])} and student {_size(memory['student_bytes'])} need "
        f"{_size(memory['needed_bytes'])} with the baseline copy, gradients and AdamW states, more than "
        f"{HEADROOM:.0%} of the {_size(memory['available_bytes'])} available on {memory['device']} (the rest is kept "
        "for activations). Use method offline or seq_kd (the teacher's outputs are cached first and the teacher "
        "freed before the students train), a smaller student, or a worker with more memory"
    )


def _size(n: int | None) -> str:
    """Bytes for people: '1.5 GiB (1,610,612,736 bytes)'."""
    if n is None:
        return "an unknown amount"
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit} ({n:,} bytes)"
    return f"{n:,} bytes"


def _estimate(teacher, rows: LMRows, eval_rows: LMRows, config, smoke: dict) -> dict:
    """The teacher's cost of this job, from the rows' lengths in the teacher's tokens (a generated completion
    counted at max_length)."""
    missing = sum(c is None for c in rows.completions)
    completions = [c or "" for c in rows.completions]
    length = config.max_length if missing else encode(teacher.tokenizer, rows.prompts, completions, config.max_length)
    eval_data = encode(
        teacher.tokenizer, eval_rows.prompts, [c or "" for c in eval_rows.completions], config.max_length
    )
    if isinstance(length, int):
        train = (len(rows.prompts), missing, length, length)
    else:
        train = (len(rows.prompts), missing, int(length.ids.shape[1]), _mean_length(length))
    eval_ = (len(eval_data), int(eval_data.ids.shape[1]), _mean_length(eval_data))
    return estimate(config.method, config, train, eval_, smoke, getattr(teacher.model.config, "vocab_size", None))


def _mean_length(data: LMBatch) -> int:
    """The rows' mean real length in tokens, rounded up."""
    return -(-int(data.attention.sum()) // max(1, len(data)))
