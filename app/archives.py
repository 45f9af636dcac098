"""Zip archive checks from the central directory alone (no extraction): names, links, counts, sizes, ratios.

Used by the API at upload time for archive datasets (a zip of class folders of images). The worker reads
the members straight from the zip without writing them to disk, and checks them again
(worker/engine/images.py holds the same rules: the engine may not import app/).
"""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

from app.errors import Unprocessable

MAX_MEMBERS = 200_000
MAX_TOTAL_UNCOMPRESSED = 8 * 1024**3
MAX_RATIO = 100  # uncompressed / compressed, for members above RATIO_MIN_BYTES
RATIO_MIN_BYTES = 1024**2
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def unsafe_member(info: zipfile.ZipInfo) -> str | None:
    """Why a member may not be extracted, or None."""
    name = info.filename
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return f"member {name!r} has an absolute path"
    if "\\" in name:
        return f"member {name!r} has a backslash in its path"
    if any(part == ".." for part in name.split("/")):
        return f"member {name!r} climbs out of the archive with '..'"
    mode = info.external_attr >> 16
    if info.create_system == 3 and stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        return f"member {name!r} is a link or special file"
    return None


def check_zip(
    path: Path,
    max_members: int = MAX_MEMBERS,
    max_total: int = MAX_TOTAL_UNCOMPRESSED,
    max_ratio: float = MAX_RATIO,
) -> list[zipfile.ZipInfo]:
    """The archive's members, or 422 naming the first problem (path escape, link, zip bomb)."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        # Not the exception's text: an OSError names the server's path of the upload.
        raise Unprocessable(
            "the zip archive's directory cannot be read (truncated or corrupt)", code="invalid_dataset"
        ) from None
    if len(infos) > max_members:
        raise Unprocessable(
            f"the archive has {len(infos)} members; at most {max_members} are accepted", code="unsafe_archive"
        )
    total = 0
    for info in infos:
        problem = unsafe_member(info)
        if problem:
            raise Unprocessable(f"unsafe archive: {problem}", code="unsafe_archive")
        total += info.file_size
        if total > max_total:
            raise Unprocessable(f"the archive unpacks to more than {max_total} bytes", code="unsafe_archive")
        if info.file_size > RATIO_MIN_BYTES and info.file_size > max_ratio * max(info.compress_size, 1):
            raise Unprocessable(
                f"member {info.filename!r} is compressed {info.file_size / max(info.compress_size, 1):.0f}:1 "
                f"(at most {max_ratio}:1 is accepted): this looks like a zip bomb",
                code="unsafe_archive",
            )
    return infos


def image_members(infos: list[zipfile.ZipInfo]) -> list[zipfile.ZipInfo]:
    """Members that look like images by name (their content is checked when read)."""
    return [
        i
        for i in infos
        if not i.is_dir()
        and i.filename.lower().endswith(IMAGE_SUFFIXES)
        and not Path(i.filename).name.startswith(".")
        and not i.filename.startswith("__MACOSX/")
    ]
