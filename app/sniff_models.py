"""Recognise an uploaded model by its content: TorchScript, torch.export (.pt2), ONNX, or a Hugging Face folder
as one zip or tar (`hf`); refuse pickles. Only archive directories are read here, never a member."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

from app.archives import unsafe_member
from app.errors import ApiError, Unprocessable
from app.sniff_common import CONTENT_ERRORS, MODEL_FORMATS_HINT, ZIP_ERRORS, is_pickle, unreadable, zip_names
from contract.hf_folder import folder_files, folder_problem, folder_root

MAX_TAR_MEMBERS = 10_000


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
        head = fh.read(512)
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
    if head[257:262] == b"ustar":
        return _tar_model_format(path)
    # An ONNX ModelProto is a protobuf whose first field is ir_version (field 1, varint): tag byte 0x08.
    if head[0] == 0x08:
        return "onnx"
    raise Unprocessable(f"the file is not a recognised model; {MODEL_FORMATS_HINT}", code="unsupported_model_format")


def _zip_model_format(path: Path) -> str:
    """'torchscript' or 'pt2' from a zip's member names; a torch.save archive or any other zip answers 422."""
    names = zip_names(path, "invalid_model", MODEL_FORMATS_HINT)
    if folder_root(names) is not None:
        _check_zip_members(path)
        return _hf_format(names)
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


def _hf_format(names: list[str]) -> str:
    """'hf' for an acceptable Hugging Face folder; 422 naming what its file names show to be wrong."""
    root = folder_root(names)
    problem = folder_problem(folder_files(names, root or ""))
    if problem:
        code = "unsafe_archive" if "files;" in problem else "unsupported_model_format"
        raise Unprocessable(f"this Hugging Face model folder is refused: {problem}", code=code)
    return "hf"


def _check_zip_members(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except ZIP_ERRORS:
        raise Unprocessable("the zip archive's directory cannot be read", code="invalid_model") from None
    for info in infos:
        problem = unsafe_member(info)
        if problem:
            raise Unprocessable(f"unsafe archive: {problem}", code="unsafe_archive")


def _tar_model_format(path: Path) -> str:
    """'hf' for a tar of a Hugging Face folder: plain members only, no links, no path out of the folder."""
    names: list[str] = []
    try:
        with tarfile.open(path, mode="r:") as tf:
            for member in tf:
                if len(names) >= MAX_TAR_MEMBERS:
                    raise Unprocessable(f"the archive has more than {MAX_TAR_MEMBERS} members", code="unsafe_archive")
                if not (member.isfile() or member.isdir()):
                    raise Unprocessable(
                        f"unsafe archive: member {member.name!r} is a link or special file", code="unsafe_archive"
                    )
                name = member.name.removeprefix("./") + ("/" if member.isdir() else "")
                if name.startswith("/") or any(part == ".." for part in name.split("/")):
                    raise Unprocessable(
                        f"unsafe archive: member {member.name!r} leaves the folder", code="unsafe_archive"
                    )
                names.append(name)
    except (tarfile.TarError, *ZIP_ERRORS) as exc:
        raise unreadable("the tar archive cannot be read", exc, "invalid_model", MODEL_FORMATS_HINT) from None
    if folder_root(names) is None:
        raise Unprocessable(
            f"the tar archive holds no Hugging Face model folder (no config.json); {MODEL_FORMATS_HINT}",
            code="unsupported_model_format",
        )
    return _hf_format(names)
