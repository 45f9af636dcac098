"""An `hf` student: the Hugging Face teacher's own family with fewer layers, initialised from the teacher.

DistilBERT (Sanh et al. 2019) starts its student from every other teacher layer; here the student's layer j
starts from teacher layer j * L_teacher // L_student, with the embeddings, pooler and classifier copied whole,
whenever the widths match. The exported student is a plain Hugging Face folder (save_pretrained, zipped) that
loads with AutoModelForSequenceClassification.from_pretrained and nothing of ours.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import tempfile
import zipfile
from typing import Any

import torch

from worker.engine.errors import EngineError
from worker.engine.hf_teacher import HFClassifier

HF_EXPORT = "student_hf.zip"
LAYER = re.compile(r"\.(layer|layers|h|block)\.(\d+)\.")
SIZES = ("hidden_size", "intermediate_size", "num_attention_heads")
WIDTHS = ("hidden_size", "intermediate_size")


def build_hf_student(spec: dict, teacher) -> HFClassifier:
    """A fresh `hf` student for the (loaded) Hugging Face teacher; EngineError("invalid_student") if it cannot be."""
    module = getattr(teacher, "module", None)
    if getattr(teacher, "format", None) != "hf" or not isinstance(module, HFClassifier):
        raise EngineError("invalid_student", "an 'hf' student needs a Hugging Face teacher (format hf)")
    t_config: Any = module.model.config
    config, init = smaller_config(t_config, spec, SIZES, default_init="teacher_layers")
    t_layers, layers = int(t_config.num_hidden_layers), int(config.num_hidden_layers)
    from transformers import AutoModelForSequenceClassification

    student = AutoModelForSequenceClassification.from_config(config)
    if init == "teacher_layers":
        copy_teacher_layers(module.model, student, t_layers, layers)
    wrapped = HFClassifier(student, module.pad_id)
    wrapped.tokenizer_folder = module.folder
    return wrapped


def smaller_config(t_config: Any, spec: dict, sizes: tuple[str, ...], default_init: str | None = None) -> tuple:
    """(the student's config, its init): the teacher's config with the spec's fewer layers and sizes, checked.

    `default_init` None means teacher_layers when the widths match, else random; EngineError("invalid_student")
    for a spec that cannot be built or initialised.
    """
    config: Any = copy.deepcopy(t_config)
    t_layers = int(t_config.num_hidden_layers)
    layers = int(spec.get("num_hidden_layers") or max(1, t_layers // 2))
    if not 1 <= layers <= t_layers:
        raise EngineError("invalid_student", f"num_hidden_layers must be 1 to the teacher's {t_layers}, got {layers}")
    config.num_hidden_layers = layers
    for name in sizes:
        if spec.get(name) is not None:
            setattr(config, name, int(spec[name]))
    if config.hidden_size % config.num_attention_heads:
        raise EngineError(
            "invalid_student",
            f"hidden_size {config.hidden_size} must be a multiple of num_attention_heads {config.num_attention_heads}",
        )
    # Copying layers needs the same shapes: the width of the residual stream and of the feed-forward layers.
    same_width = all(getattr(config, n, None) == getattr(t_config, n, None) for n in WIDTHS)
    init = spec.get("init", default_init or ("teacher_layers" if same_width else "random"))
    if init == "teacher_layers" and not same_width:
        raise EngineError(
            "invalid_student",
            "init teacher_layers copies the teacher's layers, so hidden_size and intermediate_size must be the "
            "teacher's; leave them out or use init random",
        )
    return config, init


def load_hf_student(path: str, num_classes: int | None, vocab_size: int | None, pad_id: int | None) -> HFClassifier:
    """An uploaded Hugging Face sequence classifier as the student: its own weights, a head for the data's classes.

    Its vocabulary must cover the data's token ids (the data is tokenised with the teacher's tokenizer, so in
    practice the two must share one tokenizer).
    """
    from worker.engine.hf_teacher import load_hf_classifier

    try:
        student, info = load_hf_classifier(path, "cpu", num_labels=num_classes)
    except EngineError as exc:
        raise EngineError("invalid_student", exc.message.replace("this Hugging Face model", "the student")) from None
    if vocab_size is not None and (info.get("vocab_size") or 0) < vocab_size:
        raise EngineError(
            "invalid_student",
            f"the uploaded student knows {info.get('vocab_size')} token ids but the data uses {vocab_size}: a "
            "Hugging Face student must share the teacher's tokenizer (or use the hf architecture, built from it)",
        )
    if pad_id is not None:
        student.pad_id = pad_id
    student.tokenizer_folder = student.folder
    student.train()
    return student


def teacher_layer_for(j: int, t_layers: int, s_layers: int) -> int:
    """The teacher layer that student layer j starts from (0, 2, 4, ... for half the layers)."""
    return j * t_layers // s_layers


@torch.no_grad()
def copy_teacher_layers(teacher: torch.nn.Module, student: torch.nn.Module, t_layers: int, s_layers: int) -> None:
    """Copy every student tensor from its teacher counterpart (layer index mapped) where the shapes agree."""
    source = teacher.state_dict()
    target = student.state_dict()
    for key, tensor in target.items():
        match = LAYER.search(key)
        if match:
            j = int(match.group(2))
            mapped = f".{match.group(1)}.{teacher_layer_for(j, t_layers, s_layers)}."
            key_in_teacher = key[: match.start()] + mapped + key[match.end() :]
        else:
            key_in_teacher = key
        value = source.get(key_in_teacher)
        if value is not None and value.shape == tensor.shape:
            tensor.copy_(value)


def export_hf_folder(student: HFClassifier, classes: list[str], out_dir: str) -> str:
    """student_hf.zip: the student's save_pretrained folder with the teacher's tokenizer files and labels."""
    model: Any = copy.deepcopy(student.model).to("cpu").eval()
    model.config.id2label = dict(enumerate(classes))
    model.config.label2id = {c: i for i, c in enumerate(classes)}
    path = os.path.join(out_dir, HF_EXPORT)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        folder = student.tokenizer_folder or ""
        for name in os.listdir(folder) if folder else []:
            if name.startswith(("tokenizer", "special_tokens", "vocab", "merges")) or name == "chat_template.jinja":
                shutil.copy(os.path.join(folder, name), os.path.join(tmp, name))
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name in sorted(os.listdir(tmp)):
                zf.write(os.path.join(tmp, name), name)
    return path
