"""ONNX of Hugging Face students (issue 12, point 7): student.onnx takes input_ids and attention_mask at any batch
and length, gives what the PyTorch student gives, and an architecture that does not export costs only the file."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch

from tests.support import hf_folders as hf
from worker.engine import DatasetSpec, DistillConfig, distill
from worker.engine.hf_onnx import Logits

HF_STUDENT = {"architecture": "hf", "num_hidden_layers": 1}


def _classifier_job(tmp_path, export: list[str]) -> tuple[dict, object]:
    folder, _ = hf.bert_classifier(tmp_path / "teacher")
    teacher = hf.zip_folder(folder, tmp_path / "teacher.zip")
    rng = np.random.default_rng(0)
    x = rng.integers(2, 64, size=(96, 12)).astype(np.int64)
    x[::3, 8:] = 0  # right-padded rows, as tokenised text is, so the mask matters
    np.savez(tmp_path / "ids.npz", x=x, y=rng.integers(0, 3, 96))
    config = DistillConfig.from_dict({"student": HF_STUDENT, "epochs": 1, "recipe": "plain", "export": export})
    out = tmp_path / "out"
    return distill(str(teacher), DatasetSpec(str(tmp_path / "ids.npz"), "npz"), None, config, str(out)), out


def _session(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _onnx_against_folder(out, into, loader, shape: tuple[int, int]):
    """(the loaded Hugging Face folder, ids, mask, max abs diff of student.onnx's logits from the folder's) on
    random rows of `shape`, one of them padded, compared where attended: transformers alone against onnxruntime."""
    with zipfile.ZipFile(out / "student_hf.zip") as zf:
        zf.extractall(into)
    model = loader.from_pretrained(into).eval()
    ids = torch.randint(2, 64, shape)
    mask = torch.ones_like(ids)
    mask[-1, shape[1] // 2 :] = 0
    with torch.no_grad():
        expected = Logits(model, causal=loader.__name__.endswith("CausalLM"))(ids, mask).numpy()
    got = _session(out / "student.onnx").run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    attended = mask.numpy().astype(bool) if got.ndim == 3 else np.ones(len(got), dtype=bool)
    diff = float(np.abs(got - expected)[attended].max())
    print(f"student.onnx vs the exported folder at {list(shape)}: max abs diff {diff}")
    return model, ids, mask, diff


@pytest.mark.slow
def test_an_hf_classifier_student_exports_onnx_that_matches_its_hugging_face_folder(tmp_path):
    from transformers import AutoModelForSequenceClassification

    from worker.engine.hf_onnx import OnnxUnavailable, check_onnx

    report, out = _classifier_job(tmp_path, ["onnx", "int8"])
    check = report["onnx_check"]
    print("classifier onnx check:", check)
    assert check["max_abs_diff"] < 1e-4 and check["argmax_agreement"] == 1.0
    assert report["onnx_max_abs_diff"] == check["max_abs_diff"]
    assert "int8" in report["export_errors"] and "onnx" not in report["export_errors"]
    assert "student.onnx" in json.loads((out / "manifest.json").read_text())["artifacts"]
    assert [i.name for i in _session(out / "student.onnx").get_inputs()] == ["input_ids", "attention_mask"]
    # At a batch and length it was not exported at, it gives what the delivered folder gives under transformers.
    model, ids, mask, diff = _onnx_against_folder(out, tmp_path / "folder", AutoModelForSequenceClassification, (5, 20))
    assert diff < 1e-4
    # The check is no formality: against a model the file no longer describes, it refuses the file.
    with torch.no_grad():
        model.classifier.bias.add_(1.0)
    with pytest.raises(OnnxUnavailable, match="disagrees"):
        check_onnx(str(out / "student.onnx"), model, ids, mask, causal=False)


def test_a_student_that_does_not_export_to_onnx_still_finishes_and_the_report_says_why(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise NotImplementedError("an operator this exporter lacks")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    report, out = _classifier_job(tmp_path, ["onnx"])
    assert "does not export to ONNX" in report["export_errors"]["onnx"]
    assert "an operator this exporter lacks" in report["export_errors"]["onnx"]
    assert not (out / "student.onnx").exists() and (out / "student_hf.zip").exists()
    assert "student.onnx" not in json.loads((out / "manifest.json").read_text())["artifacts"]


def _rows(path, count: int, seed: int):
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(count):
        words = [f"w{i}" for i in rng.integers(0, 60, size=8)]
        lines.append(json.dumps({"prompt": " ".join(words[:5]), "completion": " ".join(words[5:])}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.slow
def test_a_causal_lm_student_exports_onnx_of_its_forward_pass_when_asked(tmp_path):
    from transformers import AutoModelForCausalLM

    from worker.engine.lm_distill import LMConfig, distill_lm
    from worker.engine.lm_train import LMTrainSettings

    folder, _ = hf.gpt2_lm(tmp_path / "teacher")
    teacher = hf.zip_folder(folder, tmp_path / "teacher.zip")
    config = LMConfig(
        student={"architecture": "hf", "num_hidden_layers": 1}, train=LMTrainSettings(epochs=1, batch_size=8),
        max_length=16, max_new_tokens=4, generation_prompts=2, speed=False, onnx=True,
    )  # fmt: skip
    train, held = _rows(tmp_path / "train.jsonl", 24, 0), _rows(tmp_path / "eval.jsonl", 6, 1)
    out = tmp_path / "out"
    report = distill_lm(str(teacher), str(train), str(held), config, str(out), str(tmp_path / "cache"))
    check = report["exports"]["onnx_check"]
    print("causal LM onnx check:", check)
    assert report["exports"]["onnx"] == "student.onnx" and "onnx_error" not in report["exports"]
    assert check["max_abs_diff"] < 1e-4 and check["argmax_agreement"] == 1.0
    # At a shape it was not exported or checked at, it gives what the delivered folder gives under transformers.
    assert _onnx_against_folder(out, tmp_path / "folder", AutoModelForCausalLM, (3, 9))[3] < 1e-4


def test_an_lm_job_asks_for_onnx_through_its_export_list():
    from worker.job_lm import as_job_report, lm_config

    assert lm_config({"config": {"export": ["torchscript", "onnx"]}}).onnx
    assert not lm_config({"config": {"export": ["torchscript", "safetensors"]}}).onnx
    engine = {"teacher": {}, "student": {}, "exports": {"hf": "student_hf.zip", "onnx_error": "why"}}
    assert as_job_report(engine, "cpu", 1.0, 4)["exports"] == {"hf": "student_hf.zip", "onnx_error": "why"}


def test_one_smaller_config_serves_both_students_with_their_own_default_init():
    from transformers import LlamaConfig

    from worker.engine.errors import EngineError
    from worker.engine.hf_student import smaller_config

    teacher = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=4, num_attention_heads=2)
    sizes = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads")
    config, init = smaller_config(teacher, {}, sizes)
    assert (config.num_hidden_layers, init, teacher.num_hidden_layers) == (2, "teacher_layers", 4)
    narrow = {"hidden_size": 8, "intermediate_size": 16, "num_key_value_heads": 1}
    config, init = smaller_config(teacher, narrow, sizes)
    assert (config.hidden_size, config.num_key_value_heads, init) == (8, 1, "random")
    with pytest.raises(EngineError, match="teacher_layers"):  # a classifier's student defaults to copying layers
        smaller_config(teacher, narrow, sizes, default_init="teacher_layers")
    with pytest.raises(EngineError, match="multiple of num_attention_heads"):
        smaller_config(teacher, {"hidden_size": 9, "init": "random"}, sizes)
