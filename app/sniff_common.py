"""What the content sniffers share: the hints a refusal ends with, the errors crafted content raises, short names."""

from __future__ import annotations

import csv
import logging
import tokenize
import zipfile
import zlib
from pathlib import Path

from app.errors import Unprocessable

logger = logging.getLogger(__name__)

MODEL_FORMATS_HINT = (
    "upload a TorchScript archive (torch.jit.script/trace(...).save), a torch.export program (.pt2, "
    "torch.export.save), an ONNX file, or a Hugging Face model folder (save_pretrained) as one zip or tar"
)
DATASET_FORMATS_HINT = (
    "upload an .npz with arrays x and optional y, a CSV, JSONL or Parquet table, or a zip of "
    "class folders of PNG/JPEG images"
)
JSONL_HINT = 'a JSONL dataset holds one flat JSON object per line, e.g. {"text": "...", "label": 1}'
# What parsing crafted content can raise (zipfile, zlib, numpy's .npy header parser with its tokenizer, json,
# csv): never a server error.
CONTENT_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    NotImplementedError,
    RuntimeError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    OverflowError,
    SyntaxError,
    csv.Error,
    tokenize.TokenError,
)
# zipfile also raises OSError on a crafted archive (a seek before the start of the file).
ZIP_ERRORS = (*CONTENT_ERRORS, OSError)


def unreadable(what: str, exc: BaseException, code: str, hint: str) -> Unprocessable:
    """A 422 for content a parser choked on: the parser's own text (it may name server paths) stays in the log."""
    logger.info("unreadable upload (%s): %s: %s", what, type(exc).__name__, exc)
    return Unprocessable(f"{what}; {hint}", code=code)


def is_pickle(head: bytes) -> bool:
    """Whether the first bytes are a protocol 2+ pickle (PROTO 0x80 and the protocol number)."""
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def zip_names(path: Path, code: str, hint: str) -> list[str]:
    """The member names of a zip archive; 422 when its directory cannot be read."""
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.namelist()
    except ZIP_ERRORS as exc:
        raise unreadable(
            "the file starts like a zip archive but its directory cannot be read (truncated or corrupt)",
            exc,
            code,
            hint,
        ) from None


def shorten(text: str, limit: int = 120) -> str:
    """User-supplied names echoed in a message, cut to a readable length."""
    return text if len(text) <= limit else text[:limit] + "..."


def name_list(names: list[str], limit: int = 20) -> str:
    """A list of user-supplied names for a message: the first `limit`, each shortened."""
    shown = ", ".join(repr(shorten(n)) for n in names[:limit])
    if len(names) > limit:
        return f"[{shown}, ...] ({len(names)} in all)"
    return f"[{shown}]"
