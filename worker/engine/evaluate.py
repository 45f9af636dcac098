"""Evaluating and exporting phases: measure the teacher and the EXPORTED student, write artifacts."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch

from worker.engine import export as ex
from worker.engine.config import ProgressEvent
from worker.engine.latency import cpu_device_name, latencies, measure_pair, ort_session, setup
from worker.engine.report import accuracy
from worker.engine.students import count_parameters, text_student_spec

logger = logging.getLogger(__name__)


@torch.no_grad()
def predict(model, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Logits of a torch module over x on the CPU, in batches."""
    return torch.cat([model(torch.from_numpy(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]).numpy()


def evaluate_and_export(
    prep, student, baseline_model, config, out_dir, eval_x, eval_y, eval_logits, train_spec, eval_spec, emit
) -> dict:
    """Write student.pt, measure what the report needs, then the other artifacts and the manifest."""
    emit(ProgressEvent("phase", "evaluating on the eval split", {"phase": "evaluating"}))
    device = _device_of(student)
    student = student.to("cpu").float().eval()
    example = torch.from_numpy(eval_x[:2])
    student_path = ex.export_torchscript(student, example, out_dir)
    # The report's numbers come from the file the user downloads, run the way they will run it.
    student_logits = predict(ex.load_torchscript(student_path), eval_x)
    student_pred = student_logits.argmax(1)
    teacher_pred = eval_logits.numpy().argmax(1)
    timed = measure_pair(prep.teacher, student, student_path, example[:1], device)
    teacher = {
        "accuracy": accuracy(teacher_pred, eval_y),
        "num_parameters": prep.teacher.num_parameters,
        "size_bytes": prep.teacher.size_bytes,
        **timed["teacher"],
    }
    student_section = {
        "accuracy": accuracy(student_pred, eval_y),
        "agreement": float(np.mean(student_pred == teacher_pred)),
        "num_parameters": count_parameters(student),
        "size_bytes": os.path.getsize(student_path),
        **timed["student"],
    }
    baseline = None
    if baseline_model is not None:
        baseline_pred = predict(baseline_model.to("cpu").float().eval(), eval_x).argmax(1)
        baseline = {
            "accuracy": accuracy(baseline_pred, eval_y),
            "agreement": float(np.mean(baseline_pred == teacher_pred)),
        }
    emit(ProgressEvent("phase", "exporting the student", {"phase": "exporting"}))
    measured = (eval_x, eval_y, teacher_pred, student_logits, student_section)
    extra = _export_artifacts(prep, student, config, out_dir, example, measured, emit)
    return {"teacher": teacher, "student": student_section, "baseline": baseline, "extra": extra}


def _device_of(model) -> str:
    """The device the student trained on ("cpu" for a module without parameters)."""
    first = next(iter(model.parameters()), None)
    return "cpu" if first is None else str(first.device)


def _export_artifacts(prep, student, config, out_dir, example, measured, emit) -> dict:
    """The requested formats beside student.pt, and the manifest; returns the report's extra keys."""
    artifacts = [ex.TORCHSCRIPT]
    extra: dict[str, Any] = {}
    failures: dict[str, str] = {}
    input_info = {"shape": prep.train.input_shape, "dtype": str(prep.train.x.dtype)}
    if "safetensors" in config.export:
        artifacts += ex.export_safetensors(student, _architecture(prep, config, input_info), out_dir)
    if "onnx" in config.export or "int8" in config.export:
        try:
            artifacts += _onnx_artifacts(student, config, out_dir, example, measured, extra)
        except Exception as exc:  # an optional format failing must not cost the user the whole job
            failures["onnx"] = f"{type(exc).__name__}: {exc}"
    if getattr(student, "tokenizer_folder", None) is not None or config.student.get("architecture") == "hf":
        from worker.engine.hf_student import HF_EXPORT, export_hf_folder

        export_hf_folder(student, prep.classes, out_dir)  # always: the form a Hugging Face user deploys
        artifacts.append(HF_EXPORT)
    if "pt2" in config.export:
        try:
            ex.export_pt2(student, example, out_dir)
            artifacts.append(ex.PT2)
        except Exception as exc:
            failures["pt2"] = f"{type(exc).__name__}: {exc}"
    for fmt, message in failures.items():
        emit(ProgressEvent("warning", f"{fmt} export failed: {message}", {"format": fmt}))
    if failures:
        extra["export_errors"] = {**extra.get("export_errors", {}), **failures}
    ex.write_manifest(
        out_dir,
        classes=prep.classes,
        input_shape=input_info["shape"],
        input_dtype=input_info["dtype"],
        teacher_sha256=prep.teacher_sha256,
        dataset_sha256={"train": prep.train_sha256, "eval": prep.eval_sha256},
        config={**config.to_dict(), "student": public_student_spec(config.student)},
        artifacts=artifacts + [ex.MANIFEST],
        tokenizer_path=prep.train.tokenizer_path,
        pad_id=prep.pad_id,
        vocab_size=prep.vocab_size,
    )
    extra["artifacts"] = (
        artifacts + [ex.MANIFEST, "report.json"] + (["tokenizer.json"] if prep.train.tokenizer_path else [])
    )
    return extra


def _architecture(prep, config, input_info: dict) -> dict:
    # Rebuild with build_student(**): the text student's spec carries the pad id it was built with.
    return {
        "student": public_student_spec(text_student_spec(config.student, prep.pad_id)),
        "input": input_info,
        "num_classes": prep.num_classes,
        "vocab_size": prep.vocab_size,
        "pad_id": prep.pad_id,
        "classes": prep.classes,
    }


def _onnx_artifacts(student, config, out_dir, example, measured, extra: dict) -> list[str]:
    """student.onnx (checked against student.pt's logits) and, when asked, student.int8.onnx."""
    eval_x, eval_y, teacher_pred, student_logits, student_section = measured
    from worker.engine.hf_teacher import HFClassifier

    if isinstance(student, HFClassifier):  # a transformer takes input_ids and attention_mask, not one tensor
        from worker.engine.hf_onnx import hf_classifier_onnx

        return hf_classifier_onnx(student, eval_x, out_dir, config.export, extra)
    onnx_path = ex.export_onnx(student, example, out_dir)
    onnx_logits = ex.run_onnx(ex.onnx_session(onnx_path), eval_x)
    extra["onnx_max_abs_diff"] = float(np.max(np.abs(onnx_logits - student_logits)))
    made = [ex.ONNX]
    if "int8" in config.export:
        extra["int8"] = _int8_section(onnx_path, out_dir, eval_x, eval_y, teacher_pred, student_section)
        made.append(ex.INT8)
    return made


def public_student_spec(spec: dict) -> dict:
    """The student spec as shown to users: an uploaded student's server path becomes its file name."""
    if "model_path" in spec:
        return {"uploaded": os.path.basename(spec["model_path"])}
    return spec


def _int8_section(onnx_path, out_dir, eval_x, eval_y, teacher_pred, student_section) -> dict:
    path = ex.export_int8(onnx_path, out_dir)
    threads = torch.get_num_threads()
    session = ort_session(path, threads)  # timed with the same threads as the float student
    example = torch.from_numpy(eval_x[:1])
    pred = ex.run_onnx(session, eval_x).argmax(1)
    name = session.get_inputs()[0].name
    int8_accuracy = accuracy(pred, eval_y)
    drop = None
    if int8_accuracy is not None and student_section["accuracy"] is not None:
        drop = round(student_section["accuracy"] - int8_accuracy, 6)
    return {
        "accuracy": int8_accuracy,
        "agreement": float(np.mean(pred == teacher_pred)),
        "accuracy_drop": drop,
        "size_bytes": os.path.getsize(path),
        "latency_ms": latencies(lambda x: session.run(None, {name: x.numpy()}), example),
        "latency": setup(cpu_device_name(), "onnxruntime", threads, example),
    }
