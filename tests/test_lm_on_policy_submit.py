"""On-policy KD at submit (issue 12, point 3): the method and its settings are accepted, and a student with
another vocabulary is refused as for every logit method, naming seq_kd; read from the uploads' info alone."""

from __future__ import annotations

import pytest

from app.errors import Unprocessable
from app.lm_inputs import check_lm_job
from app.models import Dataset, Model
from contract.wire import JobCreate


def _uploads(student_vocab: int):
    teacher = Model(format="hf", info={"task": "causal_lm", "vocab_size": 1000})
    student = Model(format="hf", info={"task": "causal_lm", "vocab_size": student_vocab})
    prompts = Dataset(format="jsonl", info={"kind": "prompts", "has_completions": True})
    return teacher, student, prompts


def _body(lm: dict) -> JobCreate:
    return JobCreate.model_validate(
        {"teacher_id": "mdl_t", "train_dataset_id": "dst_a", "eval_dataset_id": "dst_b",
         "student": {"model_id": "mdl_s"}, "lm": lm}
    )  # fmt: skip


def test_on_policy_is_accepted_with_its_settings():
    teacher, student, prompts = _uploads(1000)
    body = _body({"method": "on_policy", "on_policy_fraction": 0.25, "on_policy_objective": "jsd",
                  "warm_start_epochs": 2})  # fmt: skip
    check_lm_job(body, teacher, prompts, prompts, student)
    assert body.lm is not None
    assert body.lm.train_fields()["on_policy_fraction"] == 0.25 and body.lm.train_fields()["warm_start_epochs"] == 2


def test_on_policy_across_vocabularies_is_refused_naming_seq_kd():
    teacher, student, prompts = _uploads(800)
    with pytest.raises(Unprocessable) as refused:
        check_lm_job(_body({"method": "on_policy"}), teacher, prompts, prompts, student)
    assert refused.value.code == "invalid_student"
    assert "on_policy" in refused.value.message and "seq_kd" in refused.value.message
    check_lm_job(_body({"method": "seq_kd"}), teacher, prompts, prompts, student)  # works across them


def test_on_policy_fraction_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="on_policy_fraction"):
        _body({"method": "on_policy", "on_policy_fraction": 1.5})
