"""One name per number: Job.metrics are the validation slice's (validation_*), also for jobs stored earlier."""

from contract.wire.jobs import Metrics
from worker.job_progress import METRIC_KEYS


def test_the_recorded_metric_keys_are_the_validation_slices():
    assert METRIC_KEYS == ("train_loss", "validation_accuracy", "validation_agreement")


def test_a_job_stored_with_the_old_names_reads_under_the_new_ones():
    stored = {"train_loss": 0.4, "eval_accuracy": 0.9, "eval_agreement": 0.8}
    assert Metrics.model_validate(stored).model_dump() == {
        "train_loss": 0.4,
        "validation_accuracy": 0.9,
        "validation_agreement": 0.8,
    }
