"""One name per number: Job.metrics are the validation slice's (validation_*), also for jobs stored earlier."""

from contract.wire.jobs import Metrics
from worker.job_progress import METRIC_KEYS


def test_the_recorded_metric_keys_are_the_validation_slices():
    assert METRIC_KEYS == ("train_loss", "validation_accuracy", "validation_agreement")


def test_a_job_stored_with_the_old_names_reads_under_the_new_ones():
    stored = {"train_loss": 0.4, "eval_accuracy": 0.9, "eval_agreement": 0.8}
    assert Metrics.model_validate(stored).model_dump(exclude_none=True) == {
        "train_loss": 0.4,
        "validation_accuracy": 0.9,
        "validation_agreement": 0.8,
    }


def test_a_causal_lm_job_has_its_own_metric_names_not_accuracies():
    from worker.lm_metrics import LM_METRIC_KEYS, lm_metrics

    report = {
        "lm_history": {"student": [{"epoch": 1, "loss": 2.0, "validation_nll": 1.5}]},
        "teacher": {"perplexity": 3.0}, "student": {"perplexity": 4.0}, "baseline": {"perplexity": 5.0},
        "gap_recovered": {"value": 0.4},
    }  # fmt: skip
    metrics = Metrics.model_validate(lm_metrics(report)).model_dump(exclude_none=True)
    assert metrics == {"train_loss": 2.0, "validation_nll": 1.5, "teacher_perplexity": 3.0,
                       "student_perplexity": 4.0, "baseline_perplexity": 5.0, "gap_recovered": 0.4}  # fmt: skip
    assert set(LM_METRIC_KEYS) <= set(Metrics.model_fields) and not set(LM_METRIC_KEYS) & set(METRIC_KEYS)
