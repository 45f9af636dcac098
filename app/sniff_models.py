"""Recognise an uploaded model by its content: TorchScript, torch.export (.pt2) or ONNX; refuse pickles."""

from __future__ import annotations

from pathlib import Path

from app.errors import ApiError, Unprocessable
from app.sniff_common import CONTENT_ERRORS, MODEL_FORMATS_HINT, is_pickle, unreadable, zip_names


def sniff_model(path: Path) -> str:
    """The model format of a file: 'torchscript', 'pt2' or 'onnx'; anything else answers 422."""
    try:
        return _sniff_model(path)
    except ApiError:
        raise
    except CONTENT_ERRORS as exc:
        raise unreadable("the file cannot be read as a model", exc, "invalid_model", MODEL_FORMATS_HINT) from None


def _sniff_model(path: Path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(64)
    if not head:
        raise Unprocessable(f"the file is empty; {MODEL_FORMATS_HINT}", code="invalid_model")
    if is_pickle(head):
        raise Unprocessable(
            f"the file is a Python pickle, which the service never loads (it can run arbitrary code); "
            f"{MODEL_FORMATS_HINT}",
            code="unsupported_model_format",
        )
    if head.startswith(b"PK\x03\x04"):
        return _zip_model_format(path)
    # An ONNX ModelProto is a protobuf whose first field is ir_version (field 1, varint): tag byte 0x08.
    if head[0] == 0x08:
        return "onnx"
    raise Unprocessable(f"the file is not a recognised model; {MODEL_FORMATS_HINT}", code="unsupported_model_format")


def _zip_model_format(path: Path) -> str:
    """'torchscript' or 'pt2' from a zip's member names; a torch.save archive or any other zip answers 422."""
    names = zip_names(path, "invalid_model", MODEL_FORMATS_HINT)
    tails = {name.split("/", 1)[1] if "/" in name else name for name in names}
    if any(t.startswith("code/") for t in tails) and "data.pkl" in tails:
        return "torchscript"
    if "archive_format" in tails or any(t.startswith("models/") for t in tails):
        return "pt2"
    if "data.pkl" in tails:
        raise Unprocessable(
            "the file is a torch.save archive (a pickled Python object), which the service never loads; "
            f"{MODEL_FORMATS_HINT}",
            code="unsupported_model_format",
        )
    raise Unprocessable(
        f"the zip archive is not a TorchScript or torch.export model; {MODEL_FORMATS_HINT}",
        code="unsupported_model_format",
    )
