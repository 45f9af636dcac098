"""A Hugging Face BERT classifier as the teacher (issue 12, point 2, first part): real text, built-in student."""

from __future__ import annotations

import pytest

from tests.support.hf_folders import train_bert_teacher
from worker.engine import DatasetSpec, DistillConfig, distill
from worker.engine.errors import EngineError
from worker.engine.students import build_student

STUDENT = {"architecture": "lstm", "embedding_dim": 16, "hidden_dim": 32, "bidirectional": True}


@pytest.mark.slow
def test_a_bert_teacher_distils_into_a_small_lstm_on_real_text(tmp_path, teacher_path):
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

    # Uploaded without a tokenizer (tokenizer_from "teacher"): the job tokenises with the teacher's tokenizer.json.
    def untokenised(name: str) -> DatasetSpec:
        return DatasetSpec(str(files[name]), "csv", max_length=32, tokenizer_from="teacher")

    quick = DistillConfig.from_dict({"student": STUDENT, "export": [], "epochs": 1, "recipe": "plain"})
    again = distill(str(teacher), untokenised("train"), untokenised("eval"), quick, str(tmp_path / "again"))
    assert again["teacher"]["accuracy"] == pytest.approx(teacher_accuracy, abs=1e-6)
    with pytest.raises(EngineError, match="not a Hugging Face folder"):
        distill(teacher_path, untokenised("train"), None, quick, str(tmp_path / "other"))


def test_an_hf_student_starts_from_every_other_teacher_layer(tmp_path):
    import torch

    from tests.support import hf_folders as hf
    from worker.engine.teachers import load_teacher

    folder, _ = hf.bert_classifier(tmp_path / "bert")
    teacher = load_teacher(str(hf.zip_folder(folder, tmp_path / "bert.zip")))
    student = build_student({"architecture": "hf", "num_hidden_layers": 1}, [16], "int64", 3, 64, 0, teacher)
    t, s = teacher.module.model.state_dict(), student.model.state_dict()
    assert student.model.config.num_hidden_layers == 1
    assert torch.equal(
        s["bert.encoder.layer.0.attention.self.query.weight"], t["bert.encoder.layer.0.attention.self.query.weight"]
    )
    assert torch.equal(s["bert.embeddings.word_embeddings.weight"], t["bert.embeddings.word_embeddings.weight"])
    assert torch.equal(s["classifier.weight"], t["classifier.weight"])
    fresh = build_student(
        {"architecture": "hf", "num_hidden_layers": 1, "init": "random"}, [16], "int64", 3, 64, 0, teacher
    )
    assert not torch.equal(fresh.model.state_dict()["classifier.weight"], t["classifier.weight"])
    with pytest.raises(EngineError, match="teacher_layers"):
        build_student(
            {"architecture": "hf", "hidden_size": 8, "num_attention_heads": 2}, [16], "int64", 3, 64, 0, teacher
        )
    with pytest.raises(EngineError, match="Hugging Face teacher"):
        build_student({"architecture": "hf"}, [16], "int64", 3, 64, 0, None)


@pytest.mark.slow
def test_an_hf_student_from_teacher_layers_exports_a_folder_transformers_loads(tmp_path):
    import zipfile

    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification

    from tests.support.real_text import make_real_text_fixture
    from worker.engine.text import load_text_table

    # Six layers over a 1,000-word vocabulary: with the embeddings a smaller share of the teacher, one layer
    # copied from it makes a student 3 times smaller (of two layers and 3,000 words, 80% were embeddings).
    files = make_real_text_fixture(tmp_path / "text", max_words=1000)
    teacher, teacher_accuracy, teacher_parameters = train_bert_teacher(files, tmp_path, layers=6, intermediate_size=256)
    spec = DatasetSpec(str(files["eval"]), "csv", tokenizer_path=str(files["tokenizer"]), max_length=32)
    train = DatasetSpec(str(files["train"]), "csv", tokenizer_path=str(files["tokenizer"]), max_length=32)
    config = DistillConfig.from_dict({"student": {"architecture": "hf", "num_hidden_layers": 1}, "export": []})
    report = distill(str(teacher), train, spec, config, str(tmp_path / "out"))
    print(f"teacher {teacher_accuracy:.4f} ({teacher_parameters:,}); {report['student']}; {report['baseline']}")
    assert report["student"]["num_parameters"] * 3 <= teacher_parameters
    assert report["student"]["accuracy"] >= 0.95 * teacher_accuracy
    # Better than the same student (also started from the teacher's layers) trained on the labels alone.
    assert report["student"]["accuracy"] > report["baseline"]["accuracy"]
    assert report["student"]["agreement"] > report["baseline"]["agreement"]

    # The exported folder loads with transformers alone and scores what the report says, on the same token ids.
    with zipfile.ZipFile(tmp_path / "out" / "student_hf.zip") as zf:
        zf.extractall(tmp_path / "student_hf")
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student_hf").eval()
    classes = [model.config.id2label[i] for i in range(model.config.num_labels)]
    x, y, _ = load_text_table(_table(spec, classes))
    with torch.no_grad():
        ids = torch.from_numpy(x)
        predicted = model(input_ids=ids, attention_mask=(ids != 0).long()).logits.argmax(1).numpy()
    assert float(np.mean(predicted == y)) == pytest.approx(report["student"]["accuracy"], abs=1e-6)
    assert (tmp_path / "student_hf" / "tokenizer.json").exists()


def _table(spec: DatasetSpec, classes: list[str]):
    from types import SimpleNamespace

    return SimpleNamespace(
        path=spec.path, format="csv", label_column=None, text_column=None,
        tokenizer_path=spec.tokenizer_path, max_length=spec.max_length, classes=classes,
    )  # fmt: skip


def test_an_uploaded_hf_student_trains_on_the_teachers_token_ids_and_exports_a_folder(tmp_path):
    import zipfile

    import numpy as np
    from transformers import AutoModelForSequenceClassification

    from tests.support import hf_folders as hf

    teacher_folder, _ = hf.bert_classifier(tmp_path / "teacher")
    teacher = hf.zip_folder(teacher_folder, tmp_path / "teacher.zip")
    student_folder, student_parameters = hf.bert_classifier(tmp_path / "student", labels=("a", "b"), layers=1)
    rng = np.random.default_rng(0)
    data = tmp_path / "ids.npz"
    np.savez(data, x=rng.integers(2, 64, size=(120, 12)).astype(np.int64), y=rng.integers(0, 3, 120))
    spec = DatasetSpec(str(data), "npz")
    student = {"model_path": str(hf.zip_folder(student_folder, tmp_path / "student.zip"))}
    config = DistillConfig.from_dict({"student": student, "epochs": 2, "recipe": "plain", "export": []})
    report = distill(str(teacher), spec, None, config, str(tmp_path / "out"))
    # The student's head was two labels; it was given a head for the data's three, so its count grew by one row.
    assert report["student"]["num_parameters"] == student_parameters + 16 + 1
    with zipfile.ZipFile(tmp_path / "out" / "student_hf.zip") as zf:
        zf.extractall(tmp_path / "exported")
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "exported").config.num_labels == 3

    small, _ = hf.bert_classifier(tmp_path / "small-vocab", vocab=32)
    student = {"model_path": str(hf.zip_folder(small, tmp_path / "small.zip"))}
    config = DistillConfig.from_dict({"student": student, "epochs": 1, "recipe": "plain", "export": []})
    with pytest.raises(EngineError, match="knows 32 token ids but the data uses"):
        distill(str(teacher), spec, None, config, str(tmp_path / "out2"))
