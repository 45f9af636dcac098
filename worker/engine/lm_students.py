"""The two trainings of a causal-LM job: the SFT baseline (plain fine-tuning on the rows that came with a
completion) and the student by the job's method, each checkpointed per epoch when the job has a checkpoint folder
(worker/engine/lm_resume.py), so that a job handed back resumes at its last finished epoch."""

from __future__ import annotations

import copy
import hashlib
from dataclasses import asdict

from worker.engine.config import ProgressEvent
from worker.engine.errors import EngineError
from worker.engine.lm_data import LMBatch, LMRows, encode
from worker.engine.lm_models import CausalLM
from worker.engine.lm_onpolicy import BatchTally
from worker.engine.lm_resume import PhaseCheckpoint
from worker.engine.lm_signal import estimate_bytes
from worker.engine.lm_train import LIVE_TEACHER, train_lm


def seq_kd_seeds(config) -> list[int | None]:
    """The teacher-sample seeds seq_kd trains on (None: its greedy generations)."""
    return list(range(config.seq_kd_samples)) if config.seq_kd_samples else [None]


def _phase(job, name: str, data: LMBatch) -> PhaseCheckpoint | None:
    """The phase's checkpoint, fingerprinted by what shapes its training: a checkpoint of other data or settings
    is not resumed."""
    config = job.config
    if not config.checkpoint_dir:
        return None
    rows = hashlib.sha256(data.ids.numpy().tobytes() + data.completion.numpy().tobytes()).hexdigest()
    # An uploaded student's path names the attempt's staging folder: its content's digest stands for it.
    student = {k: str(v) for k, v in config.student.items() if k != "path"} | {"sha256": job.student.sha256}
    method = config.method if name == "student" else "sft"
    settings = {
        "method": method,
        "train": asdict(config.train),
        "student": student,
        "top_k": config.top_k,
        "rows": rows,
        "teacher": job.teacher.sha256,
    }

    def announce(epoch: int) -> None:
        message = f"{name} resumes after epoch {epoch}/{config.train.epochs} from its checkpoint"
        job.progress(ProgressEvent("info", message, {"model": name, "epoch": epoch, "resumed": True}))

    return PhaseCheckpoint(config.checkpoint_dir, name, settings, announce)


def train_both(job, rows: LMRows, validation_rows: LMRows) -> dict:
    """Train the SFT baseline and the distilled student; their histories and the models (under _models)."""
    config, student = job.config, job.student
    baseline = CausalLM(copy.deepcopy(student.model), student.tokenizer, student.folder)
    filled = job.filled(rows)
    labelled = [(p, c) for p, c in zip(rows.prompts, rows.completions, strict=True) if c is not None]
    if not labelled:
        raise EngineError("invalid_dataset", "the training data needs some rows with completions for the baseline")
    tok, length = student.tokenizer, config.max_length
    validation = encode(tok, validation_rows.prompts, [c or "" for c in validation_rows.completions], length)
    sft_data = encode(tok, [p for p, _ in labelled], [c for _, c in labelled], length)
    resume = _phase(job, "baseline", sft_data)
    baseline_history = train_lm(baseline.model, sft_data, validation, "sft", config.train,
                                on_epoch=job.epoch_hook("baseline", 0), resume=resume)  # fmt: skip
    signal, planned = None, None
    if config.method == "seq_kd":
        # The teacher's generations are added to the completions the data brings, not put in their place.
        prompts, generations = [p for p, _ in labelled], [c for _, c in labelled]
        for seed in seq_kd_seeds(config):
            prompts, generations = prompts + rows.prompts, generations + job.generations(rows.prompts, seed)
        data = encode(tok, prompts, generations, length)
    else:
        data = encode(tok, rows.prompts, filled, length)
        if config.method == "offline":
            vocab = getattr(job.teacher.model.config, "vocab_size", None)
            planned = estimate_bytes(len(data), data.ids.shape[1], config.top_k, vocab)
            signal = job.topk(rows, filled, config.top_k, "train_topk")
    teacher_model = job.teacher.model if config.method in LIVE_TEACHER else None
    on_policy = BatchTally() if config.method == "on_policy" else None
    history = train_lm(student.model, data, validation, config.method, config.train, teacher_model, signal,
                       max_new_tokens=config.max_new_tokens, tally=on_policy,
                       on_epoch=job.epoch_hook("student", config.train.epochs, on_policy),
                       resume=_phase(job, "student", data))  # fmt: skip
    return {
        "task": "causal_lm",
        "method": config.method,
        "on_policy": on_policy.summary(config.train) if on_policy else None,
        "planned_signal_bytes": planned,
        "rows": {"train": len(rows.prompts), "with_completion": len(labelled), "validation": len(validation)},
        "_models": (student, baseline),
        "lm_history": {"student": history, "baseline": baseline_history},
    }
