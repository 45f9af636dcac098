"""A Hugging Face sequence classifier as a teacher: unpacked from its archive and loaded inside the job child.

The folder was validated at upload (worker/engine/hf_inspect.py): safetensors weights, no code, a model type the
installed transformers implements. Loading is transformers' own, with remote code off and safetensors only;
the teacher takes the data's token ids (right-padded) and masks the padding.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import weakref

import torch
from torch import nn

from worker.engine.errors import EngineError
from worker.engine.hf_inspect import Folder, inspect_hf

logger = logging.getLogger(__name__)

MAX_UNPACKED_BYTES = 200 * 1024**3


class HFClassifier(nn.Module):
    """`model(ids)` -> logits [N, C] for token ids [N, L], padding masked out."""

    def __init__(self, model: nn.Module, pad_id: int):
        super().__init__()
        self.model = model
        self.pad_id = pad_id
        self.folder: str | None = None  # the unpacked teacher folder (the teacher only)
        self.tokenizer_folder: str | None = None  # where an hf student's tokenizer files come from

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.long()
        return self.model(input_ids=ids, attention_mask=(ids != self.pad_id).long()).logits.float()


def unpack(path: str, into: str) -> str:
    """Write the archive's folder into `into` (only the folder's plain files); the folder's path."""
    folder = Folder(path)
    total = 0
    for name in folder.files:
        target = os.path.realpath(os.path.join(into, name))
        if not target.startswith(os.path.realpath(into) + os.sep):
            raise EngineError("invalid_model", f"member {name!r} leaves the folder")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with folder.open(name) as src, open(target, "wb") as dst:
            while chunk := src.read(1 << 20):
                total += len(chunk)
                if total > MAX_UNPACKED_BYTES:
                    raise EngineError("invalid_model", f"the folder unpacks to more than {MAX_UNPACKED_BYTES} bytes")
                dst.write(chunk)
    return into


def load_hf_classifier(path: str, device: str, num_labels: int | None = None) -> tuple[HFClassifier, dict]:
    """(the module on `device` in eval mode, its upload info); `num_labels` gives it a fresh head of that size
    when its own differs (an uploaded student fine-tuned to the data's classes)."""
    info = inspect_hf(path)  # the upload's checks again: the child trusts nothing the parent says
    if info["task"] != "sequence_classification":
        raise EngineError(
            "invalid_model",
            f"this Hugging Face model is a {info['task']} ({info['architecture']}); distilling causal language "
            "models is not available yet: a sequence classifier (…ForSequenceClassification) is",
        )
    from transformers import AutoModelForSequenceClassification

    # On disk beside the job's output when the job child says where (DISTILLERY_SCRATCH_DIR): the sandbox's /tmp
    # is a tmpfs, whose pages count against the job's memory limit as much as the loaded weights do.
    folder = unpack(path, tempfile.mkdtemp(prefix="hf-teacher-", dir=os.environ.get("DISTILLERY_SCRATCH_DIR")))
    try:
        relabel = {} if num_labels is None else {"num_labels": num_labels, "ignore_mismatched_sizes": True}
        model = AutoModelForSequenceClassification.from_pretrained(
            folder, local_files_only=True, trust_remote_code=False, use_safetensors=True, **relabel
        )
    except Exception as exc:
        raise EngineError("invalid_model", f"transformers cannot load the model: {str(exc)[:300]}") from None
    teacher = HFClassifier(model, _pad_id(folder, model)).to(device).eval()
    teacher.folder = folder  # its tokenizer files travel with an exported hf student
    weakref.finalize(teacher, shutil.rmtree, folder, True)  # the unpacked copy goes with the teacher
    return teacher, info


def _pad_id(folder: str, model) -> int:
    """The tokenizer's pad id, else the config's, else 0."""
    if os.path.exists(os.path.join(folder, "tokenizer.json")):
        from worker.engine.tokens import pad_id_of

        try:
            return int(pad_id_of(os.path.join(folder, "tokenizer.json")))
        except Exception as exc:  # a tokenizer without a pad token: the config may name one
            logger.info("no pad id in the teacher's tokenizer: %s", exc)
    pad = getattr(model.config, "pad_token_id", None)
    return int(pad) if isinstance(pad, int) else 0
