"""Causal language models for distillation: the hf teacher loaded from its archive, students built from its family
or uploaded, the vocabulary check that logit KD needs, and the student exported as a plain Hugging Face folder.

Loading is transformers' own with remote code off and safetensors only, after the upload's checks run again
(worker/engine/hf_inspect.py); only the job child calls this (the trust boundary in DESIGN.md).
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import weakref
import zipfile
from dataclasses import dataclass
from typing import Any

import torch

from contract.wire.lm import LOGIT_METHODS
from worker.engine.errors import EngineError
from worker.engine.hf_inspect import inspect_hf
from worker.engine.hf_student import copy_teacher_layers, smaller_config
from worker.engine.hf_teacher import unpack

HF_LM_EXPORT = "student_hf.zip"
SIZES = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads")


@dataclass
class CausalLM:
    """A causal LM with its tokenizer; `folder` is where its tokenizer files are (for the export)."""

    model: Any
    tokenizer: Any
    folder: str | None = None
    sha256: str = ""

    @property
    def num_parameters(self) -> int:
        """Parameters, tied ones counted once."""
        return sum({id(p): p.numel() for p in self.model.parameters()}.values())


def load_causal_lm(path: str, device: str = "cpu", role: str = "teacher") -> CausalLM:
    """An uploaded hf causal LM archive (zip or tar of a save_pretrained folder), in eval mode on `device`."""
    code = "invalid_model" if role == "teacher" else "invalid_student"
    info = inspect_hf(path)  # the upload's checks again: the child trusts nothing the parent says
    if info["task"] != "causal_lm":
        raise EngineError(code, f"the {role} is a {info['task']} ({info['architecture']}), not a causal LM")
    from transformers import AutoModelForCausalLM

    folder = unpack(path, tempfile.mkdtemp(prefix=f"hf-{role}-", dir=os.environ.get("DISTILLERY_SCRATCH_DIR")))
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(
            folder, local_files_only=True, trust_remote_code=False, use_safetensors=True
        )
        tokenizer = load_tokenizer_folder(folder)
    except EngineError:
        raise
    except Exception as exc:
        raise EngineError(code, f"transformers cannot load the {role}: {str(exc)[:300]}") from None
    lm = CausalLM(model.to(device).eval(), tokenizer, folder, _sha256(path))
    weakref.finalize(lm, shutil.rmtree, folder, True)  # the unpacked copy goes with the model
    return lm


def load_tokenizer_folder(folder: str):
    """The folder's fast tokenizer (tokenizer.json), with a pad token (the EOS token when it names none)."""
    from transformers import PreTrainedTokenizerFast

    if not os.path.exists(os.path.join(folder, "tokenizer.json")):
        raise EngineError("invalid_model", "a causal LM needs its tokenizer.json in the folder")
    # The fast tokenizer class reads tokenizer.json and tokenizer_config.json as data; no code is imported.
    tokenizer = PreTrainedTokenizerFast.from_pretrained(folder, local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if tokenizer.pad_token_id is None:
        raise EngineError("invalid_model", "the tokenizer names neither a pad, an EOS nor an unknown token")
    return tokenizer


def _sha256(path: str) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def build_causal_student(spec: dict, teacher: CausalLM) -> CausalLM:
    """The teacher's family with fewer layers (and optionally narrower); `init: teacher_layers` (the default when
    the widths match) copies the embeddings, head and every k-th layer from the teacher."""
    t_config: Any = teacher.model.config
    config, init = smaller_config(t_config, spec, SIZES)
    t_layers, layers = int(t_config.num_hidden_layers), int(config.num_hidden_layers)
    from transformers import AutoModelForCausalLM

    torch.manual_seed(int(spec.get("seed", 0)))
    model = AutoModelForCausalLM.from_config(config)
    if init == "teacher_layers":
        copy_teacher_layers(teacher.model, model, t_layers, layers)
    return CausalLM(model.to(next(teacher.model.parameters()).device), teacher.tokenizer, teacher.folder)


def same_vocabulary(teacher: CausalLM, student: CausalLM) -> bool:
    """Whether the two share one tokenizer vocabulary and logit width (what logit KD compares, token by token)."""
    if teacher.tokenizer.get_vocab() != student.tokenizer.get_vocab():
        return False
    return int(teacher.model.config.vocab_size) == int(student.model.config.vocab_size)


def check_method_fits(method: str, teacher: CausalLM, student: CausalLM) -> None:
    """EngineError before any training when logit KD is asked of a pair with different vocabularies."""
    if method in LOGIT_METHODS and not same_vocabulary(teacher, student):
        raise EngineError(
            "invalid_student",
            f"logit distillation ({method}) compares the two models' next-token distributions over one vocabulary, "
            f"but the student's tokenizer ({len(student.tokenizer.get_vocab())} tokens) differs from the teacher's "
            f"({len(teacher.tokenizer.get_vocab())} tokens): use method seq_kd (sequence-level KD, fine-tuning on "
            "the teacher's generations), which works across vocabularies",
        )


def export_causal_lm(student: CausalLM, out_dir: str) -> str:
    """student_hf.zip: save_pretrained (safetensors, config, generation config) plus the student's tokenizer."""
    model: Any = copy.deepcopy(student.model).to("cpu").eval()
    path = os.path.join(out_dir, HF_LM_EXPORT)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        student.tokenizer.save_pretrained(tmp)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name in sorted(os.listdir(tmp)):
                zf.write(os.path.join(tmp, name), name)
    return path
