"""Job.metrics of a causal-LM job (contract/wire/jobs.py's Metrics): next-token NLL and perplexities, not
accuracies. Read by the worker process (worker/runner.py, worker/job_progress.py), so it imports no engine."""

from __future__ import annotations

CAUSAL_LM = "causal_lm"
LM_METRIC_KEYS = ("validation_nll", "teacher_perplexity", "student_perplexity", "baseline_perplexity", "gap_recovered",
                  "sampled_batches", "data_batches")  # fmt: skip


def lm_metrics(report: dict) -> dict:
    """Job.metrics of a finished causal-LM job: the student's last epoch, the held-out perplexities, the gap, and
    for on_policy the batches that were the student's samples and the data's."""
    history = (report.get("lm_history") or {}).get("student") or [{}]
    last = history[-1]
    figures = {f"{name}_perplexity": (report.get(name) or {}).get("perplexity") for name in ("teacher", "student",
               "baseline")}  # fmt: skip
    gap = (report.get("gap_recovered") or {}).get("value")
    on_policy = report.get("on_policy") or {}  # the student's batches by source, on_policy jobs only
    return {"train_loss": last.get("loss"), "validation_nll": last.get("validation_nll"), **figures,
            "gap_recovered": gap, "sampled_batches": on_policy.get("sampled_batches"),
            "data_batches": on_policy.get("data_batches")}  # fmt: skip
