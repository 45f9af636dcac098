"""Write the trained student in the requested formats, and the manifest that describes them."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import shutil
import warnings

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

TORCHSCRIPT = "student.pt"
SAFETENSORS = "student.safetensors"
ARCHITECTURE = "student.json"
ONNX = "student.onnx"
PT2 = "student.pt2"
INT8 = "student.int8.onnx"
MANIFEST = "manifest.json"


@contextlib.contextmanager
def quiet():
    """Silence warnings: torch 2.13 deprecates torch.jit loudly, yet TorchScript stays an accepted format."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def export_torchscript(model: nn.Module, example: torch.Tensor, out_dir: str) -> str:
    """Save student.pt (scripted, else traced), CPU, float32, eval mode."""
    path = os.path.join(out_dir, TORCHSCRIPT)
    with quiet():
        if isinstance(model, torch.jit.ScriptModule):
            scripted = model
        else:
            try:
                scripted = torch.jit.script(model)
            except Exception as exc:  # some modules only trace
                logger.info("torch.jit.script failed (%s); tracing instead", exc)
                scripted = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(scripted, path)
    return path


def load_torchscript(path: str) -> torch.jit.ScriptModule:
    """Load an exported TorchScript student on the CPU in eval mode."""
    with quiet():
        module = torch.jit.load(path, map_location="cpu")
    return module.eval()


def export_safetensors(model: nn.Module, architecture: dict, out_dir: str) -> list[str]:
    """Save student.safetensors (weights) and student.json (how to rebuild it with build_student)."""
    from safetensors.torch import save_file

    weights = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(weights, os.path.join(out_dir, SAFETENSORS))
    with open(os.path.join(out_dir, ARCHITECTURE), "w") as f:
        json.dump(architecture, f, indent=2)
    return [SAFETENSORS, ARCHITECTURE]


def export_onnx(model: nn.Module, example: torch.Tensor, out_dir: str) -> str:
    """Save student.onnx with a dynamic batch axis (TorchScript exporter, else the dynamo one)."""
    path = os.path.join(out_dir, ONNX)
    with quiet():
        try:
            torch.onnx.export(
                model,
                (example,),
                path,
                dynamo=False,
                input_names=["input"],
                output_names=["logits"],
                opset_version=17,
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            )
        except Exception as exc:
            logger.info("TorchScript-based ONNX export failed (%s); trying dynamo", exc)
            batch = torch.export.Dim("batch", min=1)
            torch.onnx.export(
                model,
                (example,),
                path,
                dynamo=True,
                input_names=["input"],
                output_names=["logits"],
                dynamic_shapes=({0: batch},),
            )
    return path


def onnx_session(path: str):
    """An onnxruntime CPU session."""
    import onnxruntime as ort

    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def run_onnx(session, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Logits of an ONNX model over x, in batches."""
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)])


def export_pt2(model: nn.Module, example: torch.Tensor, out_dir: str) -> str:
    """Save student.pt2 with torch.export (dynamic batch)."""
    path = os.path.join(out_dir, PT2)
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, path)
    return path


def export_int8(onnx_path: str, out_dir: str) -> str:
    """Save student.int8.onnx: dynamic int8 quantisation of the ONNX student with onnxruntime."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    path = os.path.join(out_dir, INT8)
    quantize_dynamic(onnx_path, path, weight_type=QuantType.QInt8)
    return path


def library_versions() -> dict:
    """Versions of the libraries that produced the artifacts."""
    import onnxruntime

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def write_manifest(
    out_dir: str,
    *,
    classes,
    input_shape,
    input_dtype,
    teacher_sha256,
    dataset_sha256,
    config: dict,
    artifacts: list[str],
    tokenizer_path: str | None,
    pad_id: int | None = None,
    vocab_size: int | None = None,
) -> str:
    """Write manifest.json; copy the tokenizer beside it when the dataset had one."""
    tokenizer = None
    if tokenizer_path:
        tokenizer = "tokenizer.json"
        shutil.copyfile(tokenizer_path, os.path.join(out_dir, tokenizer))
    manifest = {
        "classes": classes,
        "input": {"shape": input_shape, "dtype": input_dtype},
        "teacher_sha256": teacher_sha256,
        "dataset_sha256": dataset_sha256,
        "config": config,
        "tokenizer": tokenizer,
        "pad_id": pad_id,  # token-id inputs are right-padded to input.shape with this id
        "vocab_size": vocab_size,
        "artifacts": artifacts,
        "versions": library_versions(),
    }
    path = os.path.join(out_dir, MANIFEST)
    with open(path, "w") as f:
        json.dump(manifest, f, indent=2)
    return path
