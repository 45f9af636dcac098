"""Validate and describe an uploaded Hugging Face model folder (a zip or tar of what save_pretrained writes).

Runs only in the sandboxed validation child. Nothing here loads weights or runs the folder's code: config.json
and the tokenizer's JSON are parsed as data; the size is read from the safetensors headers (a length and a JSON
table of tensor shapes) and checked against the size the config implies, computed by building the model on
PyTorch's meta device (shapes without memory).
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
import tarfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from contract.hf_folder import folder_files, folder_problem, folder_root
from worker.engine.errors import EngineError
from worker.engine.lm_inspect import vocabulary_fingerprint

logger = logging.getLogger(__name__)

MAX_JSON_BYTES = 16 * 1024**2  # config.json, tokenizer_config.json, the shards' index
MAX_SAFETENSORS_HEADER = 100 * 1024**2  # the format's own limit
# Caps on what a config may ask for, checked before anything is built from it.
MAX_LAYERS = 256
MAX_WIDTH = 65_536
MAX_VOCAB = 1_048_576
MAX_PARAMETERS = 20_000_000_000


def refuse(message: str) -> EngineError:
    """The refusal of an upload, with the reason a user can act on."""
    return EngineError("invalid_model", f"this Hugging Face model folder is refused: {message}")


class Folder:
    """Read-only access to the members of a zipped or tarred folder, by their names relative to its root."""

    def __init__(self, path: str):
        self.path = path
        self.is_zip = zipfile.is_zipfile(path)
        names = self._names()
        root = folder_root(names)
        if root is None:
            raise refuse("no config.json at the top of the archive or in its one top-level folder")
        self.root = root
        self.files = folder_files(names, root)

    def _names(self) -> list[str]:
        if self.is_zip:
            with zipfile.ZipFile(self.path) as zf:
                return zf.namelist()
        with tarfile.open(self.path, mode="r:") as tf:
            members = tf.getmembers()
        for m in members:
            if not (m.isfile() or m.isdir()):
                raise refuse(f"member {m.name!r} is a link or special file")
        return [m.name.removeprefix("./") + ("/" if m.isdir() else "") for m in members]

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        """A member's bytes as a file object (read from the archive, never extracted to disk)."""
        full = self.root + name
        if self.is_zip:
            with zipfile.ZipFile(self.path) as zf, zf.open(full) as member:
                yield member
            return
        with tarfile.open(self.path, mode="r:") as tf:
            extracted = tf.extractfile(full.removeprefix("./"))
            if extracted is None:
                raise refuse(f"{name} is not a file")
            with extracted:
                yield extracted

    def json(self, name: str) -> Any:
        """A member parsed as JSON, refused when larger than MAX_JSON_BYTES or not JSON."""
        with self.open(name) as fh:
            raw = fh.read(MAX_JSON_BYTES + 1)
        if len(raw) > MAX_JSON_BYTES:
            raise refuse(f"{name} is larger than {MAX_JSON_BYTES} bytes")
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise refuse(f"{name} is not valid JSON ({exc})") from None


def inspect_hf(path: str) -> dict:
    """The upload's info: model type, task, parameters, vocabulary, labels, tokenizer; EngineError when refused."""
    try:
        folder = Folder(path)
        problem = folder_problem(folder.files)
        if problem:
            raise refuse(problem)
        config = folder.json("config.json")
        if not isinstance(config, dict):
            raise refuse("config.json is not a JSON object")
        _check_no_remote_code(config)
        built = _build_config(config)
        task, architecture = _task(config)
        _check_sizes(built)
        parameters = _weights_parameters(folder)
        expected = _config_parameters(built, architecture)
        if expected is not None and not 0.5 * expected <= parameters <= 1.5 * expected + 1024:
            raise refuse(
                f"the safetensors weights hold {parameters:,} parameters but config.json describes a "
                f"{architecture} of {expected:,}"
            )
        return _info(folder, config, built, task, architecture, parameters)
    except (zipfile.BadZipFile, tarfile.TarError, KeyError, OSError, struct.error) as exc:
        raise refuse(f"the archive cannot be read ({type(exc).__name__})") from None


def _check_no_remote_code(config: dict) -> None:
    if "auto_map" in config or config.get("trust_remote_code"):
        raise refuse(
            "config.json asks for custom code (auto_map / trust_remote_code), which is refused; only "
            "architectures the installed transformers implements run here"
        )


def _build_config(config: dict):
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        raise refuse(
            f"model_type {model_type!r} is not one the installed transformers knows "
            "(e.g. bert, distilbert, roberta, gpt2, llama, qwen2)"
        )
    fields = {k: v for k, v in config.items() if k not in ("model_type", "transformers_version")}
    try:
        return CONFIG_MAPPING[model_type](**fields)
    except Exception as exc:  # a config class rejects odd values in its own words
        raise refuse(f"config.json does not make a valid {model_type} config: {str(exc)[:200]}") from None


def _task(config: dict) -> tuple[str, str]:
    """(task, architecture class) from config.json's `architectures`, by transformers' own auto mappings."""
    from transformers.models.auto import modeling_auto

    tasks = {
        "sequence_classification": modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
        "causal_lm": modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    }
    architectures = config.get("architectures")
    name = architectures[0] if isinstance(architectures, list) and architectures else None
    for task, mapping in tasks.items():
        if isinstance(name, str) and name in set(mapping.values()):
            return task, name
    raise refuse(
        f"config.json's architectures ({str(architectures)[:120]}) name neither a sequence classifier nor a "
        "causal language model that the installed transformers implements"
    )


def _check_sizes(built) -> None:
    layers = _first(built, "num_hidden_layers", "n_layer", "num_layers")
    width = _first(built, "hidden_size", "n_embd", "d_model")
    vocab = getattr(built, "vocab_size", None)
    for what, value, cap in (
        ("layers", layers, MAX_LAYERS),
        ("width", width, MAX_WIDTH),
        ("vocabulary", vocab, MAX_VOCAB),
    ):
        if isinstance(value, int) and value > cap:
            raise refuse(f"the config asks for {value:,} {what}; at most {cap:,} are accepted")
    if isinstance(layers, int) and isinstance(width, int) and isinstance(vocab, int):
        # 12 * layers * width^2 (attention and MLP) plus the embeddings: a lower bound that needs no building.
        rough = 12 * layers * width * width + vocab * width
        if rough > MAX_PARAMETERS:
            raise refuse(f"the config describes about {rough:,} parameters; at most {MAX_PARAMETERS:,} are accepted")


def _first(built, *names: str):
    return next((getattr(built, n) for n in names if isinstance(getattr(built, n, None), int)), None)


def _config_parameters(built, architecture: str) -> int | None:
    """The parameter count the config implies, from the model built on the meta device (no memory)."""
    import torch
    import transformers

    try:
        with torch.device("meta"):
            model = getattr(transformers, architecture)(built)
    except Exception as exc:  # the count is a cross-check; a class that cannot build on meta skips it
        logger.info("cannot build %s on the meta device: %s", architecture, exc)
        return None
    if any(p.numel() > MAX_PARAMETERS for p in model.parameters()):
        return None
    unique = {id(p): p.numel() for p in model.parameters()}  # tied embeddings count once, as safetensors stores them
    return sum(unique.values())


def _weights_parameters(folder: Folder) -> int:
    """Parameters in every safetensors file, from their headers alone."""
    total = 0
    for name in (f for f in folder.files if f.lower().endswith(".safetensors")):
        with folder.open(name) as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            if length > MAX_SAFETENSORS_HEADER:
                raise refuse(f"{name}'s header claims {length} bytes; not a safetensors file")
            try:
                header = json.loads(fh.read(length))
            except ValueError:
                raise refuse(f"{name} is not a safetensors file (its header is not JSON)") from None
        for key, tensor in header.items():
            if key != "__metadata__" and isinstance(tensor, dict):
                total += math.prod(int(d) for d in tensor.get("shape", []))
        if total > MAX_PARAMETERS:
            raise refuse(f"the weights hold more than {MAX_PARAMETERS:,} parameters")
    return total


def _info(folder: Folder, config: dict, built, task: str, architecture: str, parameters: int) -> dict:
    files = set(folder.files)
    tokenizer_config = folder.json("tokenizer_config.json") if "tokenizer_config.json" in files else {}
    if not isinstance(tokenizer_config, dict):
        tokenizer_config = {}
    max_length = tokenizer_config.get("model_max_length")
    if not isinstance(max_length, int) or max_length > 10**7:  # transformers writes 1e30 for "no limit"
        max_length = _first(built, "max_position_embeddings", "n_positions")
    labels = None
    if task == "sequence_classification":
        id2label = getattr(built, "id2label", None) or {}
        labels = [str(id2label[i]) for i in sorted(id2label)]
    return {
        "format": "hf",
        "model_type": config["model_type"],
        "architecture": architecture,
        "task": task,
        "num_parameters": parameters,
        "vocab_size": getattr(built, "vocab_size", None),
        "num_classes": len(labels) if labels is not None else None,
        "labels": labels,
        "tokenizer": "tokenizer.json" in files,
        "max_length": max_length,
        "chat_template": bool(tokenizer_config.get("chat_template")) or "chat_template.jinja" in files,
        "vocabulary_sha256": vocabulary_fingerprint(files, folder.json),
        "weights": sorted(f for f in files if f.lower().endswith(".safetensors")),
        "input": None,  # token ids of any length up to max_length
        "sharded": "model.safetensors.index.json" in files,
        "size_on_disk": os.path.getsize(folder.path),
    }
