"""Text through the engine: the tokenizer's pad id reaches the student, text errors become EngineErrors,
pre-tokenised CSVs route to the text reader, and token augmentation respects padding."""

from __future__ import annotations

import csv
import json
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from contract import DEFAULT_STUDENT, DEFAULT_TEXT_STUDENT, default_student_for
from worker.engine import DatasetSpec, DistillConfig, EngineError, distill, inspect_dataset
from worker.engine.augment import augment_batch
from worker.engine.data import load_dataset
from worker.engine.students import build_student

PAD = 3  # deliberately not 0: a student padded with 0 would treat real tokens as padding
WORDS = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"]
VOCAB = {"the": 0, "a": 1, "of": 2, "[PAD]": PAD, "[UNK]": 4, **{w: i + 5 for i, w in enumerate(WORDS)}}


def write_tokenizer(path: Path, pad_id: int = PAD) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel(vocab=VOCAB, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.enable_padding(pad_id=pad_id, pad_token="[PAD]")
    tok.save(str(path))
    return path


def write_corpus(path: Path, rows: int = 160, seed: int = 0) -> Path:
    """Two string classes: 'up' sentences use the first half of WORDS, 'down' the second half."""
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(rows):
            label = "up" if i % 2 else "down"
            own = WORDS[:4] if label == "up" else WORDS[4:]
            n = rng.randint(2, 10)
            w.writerow([" ".join(rng.choice(own + ["the", "a", "of"]) for _ in range(n)), label])
    return path


class BagTeacher(nn.Module):
    """Masked mean of embeddings: a teacher that ignores padding with id `pad_id`."""

    def __init__(self, vocab: int, classes: int, pad_id: int):
        super().__init__()
        self.pad_id = pad_id
        self.embedding = nn.Embedding(vocab, 16, padding_idx=pad_id)
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = (x != self.pad_id).unsqueeze(-1).float()
        return self.head((self.embedding(x) * mask).sum(1) / mask.sum(1).clamp(min=1.0))


def write_teacher(path: Path, classes: int = 2) -> Path:
    torch.manual_seed(0)
    teacher = BagTeacher(len(VOCAB), classes, PAD)
    with torch.no_grad():  # make 'up' words vote for class 1 ("up" sorts after "down")
        teacher.embedding.weight.zero_()
        for i, word in enumerate(WORDS):
            teacher.embedding.weight[VOCAB[word], 0] = 1.0 if i < 4 else -1.0
        teacher.head.weight.zero_()
        teacher.head.bias.zero_()
        teacher.head.weight[1, 0], teacher.head.weight[0, 0] = 3.0, -3.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(teacher), str(path))
    return path


@pytest.fixture(scope="module")
def text_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("text-engine")
    return {
        "tokenizer": write_tokenizer(d / "tokenizer.json"),
        "train": write_corpus(d / "train.csv", 200, seed=1),
        "eval": write_corpus(d / "eval.csv", 60, seed=2),
        "teacher": write_teacher(d / "teacher.pt"),
    }


def spec(path, tokenizer, **kw) -> DatasetSpec:
    return DatasetSpec(str(path), "csv", text_column="text", tokenizer_path=str(tokenizer), max_length=12, **kw)


def text_config(**overrides) -> DistillConfig:
    settings = {
        "recipe": "plain",
        "student": {"architecture": "lstm", "embedding_dim": 8, "hidden_dim": 8},
        "epochs": 2,
        "batch_size": 16,
        "learning_rate": 0.01,
        "export": ["torchscript", "safetensors"],
        **overrides,
    }
    return DistillConfig.from_dict(settings)


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, text_files):
    out = tmp_path_factory.mktemp("text-run")
    tok = text_files["tokenizer"]
    report = distill(
        str(text_files["teacher"]),
        spec(text_files["train"], tok),
        spec(text_files["eval"], tok),
        text_config(),
        str(out),
    )
    return report, out


def test_student_is_built_with_the_tokenizers_pad_id_and_records_it(text_run):
    report, out = text_run
    assert report["classes"] == ["down", "up"]
    student = torch.jit.load(str(out / "student.pt"))
    assert student.pad_id == PAD
    architecture = json.loads((out / "student.json").read_text())
    assert architecture["student"]["pad_id"] == PAD and architecture["pad_id"] == PAD
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pad_id"] == PAD and manifest["tokenizer"] == "tokenizer.json"
    assert manifest["classes"] == ["down", "up"]
    assert manifest["config"]["student"] == {"architecture": "lstm", "embedding_dim": 8, "hidden_dim": 8}


def test_student_json_rebuilds_the_exported_student(text_run, text_files):
    _, out = text_run
    arch = json.loads((out / "student.json").read_text())
    model = build_student(
        arch["student"],
        arch["input"]["shape"],
        arch["input"]["dtype"],
        arch["num_classes"],
        arch["vocab_size"],
    )
    model.load_state_dict(load_file(str(out / "student.safetensors")))
    x = torch.from_numpy(load_dataset(spec(text_files["eval"], text_files["tokenizer"])).x[:8])
    assert x.shape[1] == 12 and (x == PAD).any()
    with torch.no_grad():
        assert torch.equal(model.eval()(x), torch.jit.load(str(out / "student.pt"))(x))


def test_pad_id_given_to_build_student_overrides_the_spec():
    model = build_student({"architecture": "lstm", "pad_id": 0}, [12], "int64", 2, 20, pad_id=7)
    assert model.pad_id == 7 and model.embedding.padding_idx == 7


@pytest.mark.parametrize(
    "student",
    [
        {"architecture": "lstm", "hidden_dim": 0},
        {"architecture": "lstm", "bidirectional": "yes"},
        {"architecture": "transformer", "d_model": 30, "heads": 4},
        {"architecture": "textcnn", "kernel_sizes": [40]},
        {"architecture": "lstm", "depth": 2},
    ],
)
def test_bad_text_student_is_invalid_student(tmp_path, text_files, student):
    tok = text_files["tokenizer"]
    with pytest.raises(EngineError) as info:
        distill(
            str(text_files["teacher"]),
            spec(text_files["train"], tok),
            None,
            text_config(student=student),
            str(tmp_path),
        )
    assert info.value.code == "invalid_student", info.value


def test_text_students_refuse_float_features():
    with pytest.raises(EngineError) as info:
        build_student({"architecture": "lstm"}, [12], "float32", 2, 20)
    assert info.value.code == "invalid_student"


@pytest.mark.parametrize(
    ("content", "kw", "match"),
    [
        ("words,label\nthe,up\n", {}, "text column 'text' not found"),
        ("text,label\nthe,up\n", {"label_column": "kind"}, "label column 'kind'"),
        ("text,label\nthe,up\n", {"max_length": 0}, "max_length"),
    ],
)
def test_text_dataset_errors_are_invalid_dataset_in_load_and_inspect(tmp_path, text_files, content, kw, match):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    options = {"text_column": "text", "tokenizer_path": str(text_files["tokenizer"]), "max_length": 12, **kw}
    for call in (load_dataset, inspect_dataset):
        with pytest.raises(EngineError) as info:
            call(DatasetSpec(str(path), "csv", **options))
        assert info.value.code == "invalid_dataset" and match in info.value.message


def test_missing_tokenizer_for_a_text_column_is_invalid_dataset(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("text,label\nhello,a\n")
    with pytest.raises(EngineError) as info:
        inspect_dataset(DatasetSpec(str(path), "csv", text_column="text"))
    assert info.value.code == "invalid_dataset" and "tokenizer" in info.value.message


def test_csv_with_input_ids_and_no_tokenizer_is_read_as_pretokenised_text(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_text('input_ids,label\n"[5, 6, 7]",b\n8 9,a\n"[]",a\n')
    info = inspect_dataset(DatasetSpec(str(path), "csv", max_length=4))
    assert info["input"] == {"shape": [4], "dtype": "int64"}
    assert info["pad_id"] == 0 and info["classes"] == ["a", "b"] and info["rows"] == 3
    data = load_dataset(DatasetSpec(str(path), "csv", max_length=4))
    assert data.x.tolist() == [[5, 6, 7, 0], [8, 9, 0, 0], [0, 0, 0, 0]] and data.y.tolist() == [1, 0, 0]


def test_numeric_csv_is_still_read_as_features(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text("a,b,label\n1.5,2,0\n3,4,1\n")
    info = inspect_dataset(DatasetSpec(str(path), "csv"))
    assert info["input"] == {"shape": [2], "dtype": "float32"} and "pad_id" not in info


def test_inspect_text_dataset_reports_pad_vocab_and_lengths(text_files):
    info = inspect_dataset(spec(text_files["train"], text_files["tokenizer"]))
    assert info["pad_id"] == PAD and info["vocab_size"] == len(VOCAB) and info["max_length"] == 12
    assert 2 <= info["mean_length"] <= 10 and info["classes"] == ["down", "up"]


def test_token_dropout_and_masking_never_touch_padding():
    x = torch.tensor([[5, 6, 7, PAD, PAD], [8, 9, 10, 11, PAD]])
    gen = torch.Generator().manual_seed(0)
    dropped, _ = augment_batch(x, None, 2, {"token_dropout": 1.0}, gen, pad_id=PAD)
    assert torch.equal(dropped, torch.full_like(x, PAD))
    masked, _ = augment_batch(x, None, 2, {"token_mask": 1.0}, gen, pad_id=PAD, mask_id=4)
    assert torch.equal(masked, torch.where(x == PAD, x, torch.full_like(x, 4)))
    half, _ = augment_batch(x, None, 2, {"token_dropout": 0.5}, torch.Generator().manual_seed(1), pad_id=PAD)
    assert torch.equal(half[x == PAD], x[x == PAD]) and not torch.equal(half, x)
    np.testing.assert_array_equal((half != PAD) & (half != x), np.zeros(x.shape, dtype=bool))


def test_a_text_job_that_names_no_student_gets_one_that_reads_token_ids(tmp_path, text_files):
    tok = text_files["tokenizer"]
    config = text_config(epochs=1)
    config.student = {}  # as from_dict leaves it when the job names none
    report = distill(str(text_files["teacher"]), spec(text_files["train"], tok), None, config, str(tmp_path))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["config"]["student"] == DEFAULT_TEXT_STUDENT
    assert report["student"]["num_parameters"] > 0


def test_a_job_on_features_that_names_no_student_still_gets_the_mlp():
    assert DistillConfig.from_dict({}).student == {}
    assert default_student_for("float32") == DEFAULT_STUDENT
    assert default_student_for("int64") == default_student_for("text") == DEFAULT_TEXT_STUDENT
