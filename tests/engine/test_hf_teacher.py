"""A Hugging Face BERT classifier as the teacher (issue 12, point 2, first part): real text, built-in student."""

from __future__ import annotations

import pytest

from tests.support.hf_folders import train_bert_teacher
from worker.engine import DatasetSpec, DistillConfig, distill

STUDENT = {"architecture": "lstm", "embedding_dim": 16, "hidden_dim": 32, "bidirectional": True}


@pytest.mark.slow
def test_a_bert_teacher_distils_into_a_small_lstm_on_real_text(tmp_path):
    from tests.support.real_text import make_real_text_fixture

    files = make_real_text_fixture(tmp_path / "text")  # the corpus and its tokenizer (no LSTM teacher)
    teacher, teacher_accuracy, teacher_parameters = train_bert_teacher(files, tmp_path)
    print(f"BERT teacher: {teacher_parameters:,} parameters, eval accuracy {teacher_accuracy:.4f}")
    assert teacher_accuracy > 0.5, "the fixture teacher must have learnt something for the test to mean anything"

    def spec(name: str) -> DatasetSpec:
        return DatasetSpec(str(files[name]), "csv", tokenizer_path=str(files["tokenizer"]), max_length=32)

    config = DistillConfig.from_dict({"student": STUDENT, "export": []})
    report = distill(str(teacher), spec("train"), spec("eval"), config, str(tmp_path / "out"))
    print({k: report[k] for k in ("teacher", "student", "baseline")})
    # The engine's teacher is the uploaded folder itself, loaded by transformers: it scores what it scored here.
    assert report["teacher"]["accuracy"] == pytest.approx(teacher_accuracy, abs=1e-6)
    assert report["teacher"]["num_parameters"] == teacher_parameters
    assert report["teacher"]["latency"]["runtime"] == "transformers (eager)"
    assert report["student"]["num_parameters"] * 3 <= teacher_parameters
    assert report["student"]["accuracy"] >= 0.9 * teacher_accuracy
    assert report["student"]["agreement"] > report["baseline"]["agreement"]
