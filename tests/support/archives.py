"""Image-folder zips for tests: valid ones, and hostile ones (zip-slip, symlink, zip bomb)."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def png_bytes(value: int, size: tuple[int, int] = (8, 6), mode: str = "L") -> bytes:
    """A small PNG filled with one value (a gradient added so images differ)."""
    h, w = size
    base = (np.arange(h * w).reshape(h, w) + value) % 256
    array = base.astype(np.uint8) if mode == "L" else np.stack([base] * 3, -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


def image_folder_zip(
    path: Path,
    per_class: int = 6,
    classes=("cat", "dog", "emu"),
    root: str = "",
    size: tuple[int, int] = (8, 6),
    mode: str = "L",
) -> Path:
    """A valid zip of class folders of PNG images (the second class's images are JPEG)."""
    with zipfile.ZipFile(path, "w") as zf:
        for k, name in enumerate(classes):
            for i in range(per_class):
                if k == 1:
                    buf = io.BytesIO()
                    Image.open(io.BytesIO(png_bytes(40 * k + i, size, mode))).save(buf, format="JPEG")
                    zf.writestr(f"{root}{name}/{i}.jpg", buf.getvalue())
                else:
                    zf.writestr(f"{root}{name}/{i}.png", png_bytes(40 * k + i, size, mode))
    return path


def zip_slip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("cat/0.png", png_bytes(1))
        zf.writestr("../../escaped.png", png_bytes(2))
    return path


def zip_absolute(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("cat/0.png", png_bytes(1))
        info = zipfile.ZipInfo("cat/1.png")
        info.filename = "/tmp/absolute-escape.png"  # ZipInfo() would strip the leading slash
        zf.writestr(info, png_bytes(2))
    return path


def zip_symlink(path: Path, target: str = "/etc/passwd") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("cat/0.png", png_bytes(1))
        info = zipfile.ZipInfo("dog/link.png")
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, target)
    return path


def zip_bomb(path: Path, size: int = 256 * 1024**2) -> Path:
    """A member of `size` zero bytes, deflated to about size/1000."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("cat/0.png", png_bytes(1))
        info = zipfile.ZipInfo("dog/1.png")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as fh:
            chunk = b"\0" * (1 << 20)
            for _ in range(size >> 20):
                fh.write(chunk)
    return path
