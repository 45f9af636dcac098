"""The formats a finished student can be exported in."""

from __future__ import annotations

from enum import StrEnum


class ExportFormat(StrEnum):
    TORCHSCRIPT = "torchscript"
    SAFETENSORS = "safetensors"  # weights, with a JSON architecture file beside them
    ONNX = "onnx"
    PT2 = "pt2"  # torch.export program
    INT8 = "int8"  # onnxruntime dynamic quantisation of the ONNX student


EXPORT_FORMATS: tuple[str, ...] = tuple(fmt.value for fmt in ExportFormat)
DEFAULT_EXPORTS: tuple[str, ...] = (ExportFormat.TORCHSCRIPT.value, ExportFormat.SAFETENSORS.value)
