"""Image-folder datasets: a zip of class folders of PNG/JPEG images -> x float32 [N, C, H, W] in [0, 1].

Members are read straight from the archive, never extracted, so a hostile name cannot write anywhere;
the archive is still checked first (the same rules as app/archives.py at upload, which the engine may
not import): no absolute paths, no '..', no links, and caps on members, total size and compression ratio.
Labels come from the class folder names: `spec.classes` order when given, else sorted. Every image is
resized to `spec.image_size` ([H, W]) or else to the first image's size; grayscale if the first image is.
Sizes are checked against DataLimits before memory is allocated: the target size (max_image_size per side),
values per example and the whole array (max_example_elements, max_dataset_bytes), the class count, and each
source image's pixel count from its header, before it is decoded (decompression bombs).
"""

from __future__ import annotations

import re
import stat
import warnings
import zipfile
from pathlib import PurePosixPath
from typing import cast

import numpy as np

from worker.engine.errors import EngineError
from worker.engine.limits import DataLimits, check_class_names, limit_exceeded, resolve, short_list

MAX_MEMBERS = 200_000
MAX_TOTAL_UNCOMPRESSED = 8 * 1024**3
MAX_RATIO = 100
RATIO_MIN_BYTES = 1024**2
MAX_IMAGE_PIXELS = 64 * 1024 * 1024  # per source image, before resizing, at most (and at most max_example_elements)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _bad(message: str) -> EngineError:
    return EngineError("invalid_dataset", message)


def check_members(infos: list[zipfile.ZipInfo]) -> None:
    """Refuse path escapes, links and zip bombs (EngineError invalid_dataset)."""
    if len(infos) > MAX_MEMBERS:
        raise _bad(f"the archive has {len(infos)} members; at most {MAX_MEMBERS} are accepted")
    total = 0
    for info in infos:
        name = info.filename
        if name.startswith(("/", "\\")) or "\\" in name or (len(name) > 1 and name[1] == ":"):
            raise _bad(f"unsafe archive: member {name!r} has an absolute or Windows path")
        if ".." in name.split("/"):
            raise _bad(f"unsafe archive: member {name!r} climbs out of the archive with '..'")
        mode = info.external_attr >> 16
        if info.create_system == 3 and stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise _bad(f"unsafe archive: member {name!r} is a link or special file")
        total += info.file_size
        if total > MAX_TOTAL_UNCOMPRESSED:
            raise _bad(f"unsafe archive: it unpacks to more than {MAX_TOTAL_UNCOMPRESSED} bytes")
        if info.file_size > RATIO_MIN_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise _bad(f"unsafe archive: member {name!r} is compressed more than {MAX_RATIO}:1 (a zip bomb?)")


def _class_of(name: str, strip: int) -> str | None:
    parts = PurePosixPath(name).parts[strip:]
    return parts[0] if len(parts) >= 2 else None


def _target_size(value, limits: DataLimits) -> list[int] | None:
    """[H, W] from the image_size option (or None), each side within 1..max_image_size."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = [value, value]
    ok = isinstance(value, (list, tuple)) and len(value) == 2
    if not ok or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in value):
        raise _bad(f"image_size must be [height, width] in pixels, got {value!r}")
    limits.check("max_image_size", int(max(value)), f"the longest side of image_size {list(value)} (pixels)")
    return [int(value[0]), int(value[1])]


def _check_array(n: int, channels: int, h: int, w: int, limits: DataLimits) -> None:
    per_example = channels * h * w
    limits.check("max_example_elements", per_example, f"the number of values per image ({channels}x{h}x{w})")
    limits.check("max_dataset_bytes", n * per_example * 4, f"the memory {n} images of {channels}x{h}x{w} take (bytes)")


def load_image_folder(spec, limits: DataLimits | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(x float32 [N, C, H, W], y int64 [N], classes) from a zip of class folders of images, within `limits`."""
    limits = resolve(limits)
    size = _target_size(getattr(spec, "image_size", None), limits)
    try:
        zf = zipfile.ZipFile(spec.path)
    except (zipfile.BadZipFile, OSError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise _bad(f"cannot read the zip archive: {reason}") from exc
    with zf:
        images = _image_members(zf)
        labels, classes = _class_labels(images, getattr(spec, "classes", None), limits)
        x = _Decoder(zf, len(images), size, limits).decode_all(images)
    index = {c: k for k, c in enumerate(classes)}
    y = np.asarray([index[c] for c in labels], dtype=np.int64)
    return x, y, classes


def _image_members(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The archive's PNG and JPEG members, by name, leaving out hidden files and macOS metadata."""
    infos = zf.infolist()
    check_members(infos)
    images = sorted(
        (
            i
            for i in infos
            if not i.is_dir()
            and i.filename.lower().endswith(IMAGE_SUFFIXES)
            and not PurePosixPath(i.filename).name.startswith(".")
            and not i.filename.startswith("__MACOSX/")
        ),
        key=lambda i: i.filename,
    )
    if not images:
        raise _bad("the archive holds no PNG or JPEG images")
    return images


def _class_labels(images: list[zipfile.ZipInfo], given: list | None, limits: DataLimits) -> tuple[list, list[str]]:
    """(class folder of each image, class names: `given`, else the folders sorted)."""
    # A single folder wrapping the class folders (digits/0/a.png) is stripped.
    tops = {PurePosixPath(i.filename).parts[0] for i in images}
    strip = 1 if len(tops) == 1 and all(len(PurePosixPath(i.filename).parts) >= 3 for i in images) else 0
    labels = [_class_of(i.filename, strip) for i in images]
    loose = [i.filename for i, c in zip(images, labels, strict=True) if c is None]
    if loose:
        raise _bad(f"images must sit in one folder per class; {loose[0]!r} is not in a class folder")
    found = sorted(set(cast(list[str], labels)))  # none is None: `loose` is empty
    classes = [str(c) for c in given] if given else found
    limits.check("max_classes", len(classes), "the number of classes (class folders)")
    check_class_names(classes)
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise _bad(f"class folders {unknown[:10]} are not in classes {short_list(classes)}")
    return labels, classes


class _Decoder:
    """Decodes the images one by one into one float32 array; the first image fixes channels (and size)."""

    def __init__(self, zf: zipfile.ZipFile, count: int, size: list[int] | None, limits: DataLimits):
        self.zf, self.count, self.size, self.limits = zf, count, size, limits
        # Per source image, before it is decoded: PIL refuses larger ones at open, from the header.
        self.max_pixels = min(MAX_IMAGE_PIXELS, limits.max_example_elements)
        self.channels: int | None = None
        self.x: np.ndarray | None = None

    def decode_all(self, images: list[zipfile.ZipInfo]) -> np.ndarray:
        from PIL import Image

        old_limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = self.max_pixels
        try:
            for row, info in enumerate(images):
                array = self._decode(info)
                assert self.x is not None  # _decode allocated it
                self.x[row] = array[None] if self.channels == 1 else array.transpose(2, 0, 1)
        finally:
            Image.MAX_IMAGE_PIXELS = old_limit
        return cast(np.ndarray, self.x)

    def _decode(self, info: zipfile.ZipInfo) -> np.ndarray:
        from PIL import Image

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with self.zf.open(info) as fh, Image.open(fh) as img:
                    return self._pixels(img, info.filename)
        except EngineError:
            raise
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            # PIL refused it at open, from the header: "Image size (N pixels) exceeds limit of ...".
            found = re.search(r"\((\d+) pixels\)", str(exc))
            pixels = int(found.group(1)) if found else self.max_pixels + 1
            raise _too_many_pixels(info.filename, pixels, self.max_pixels, self.limits) from exc
        except Exception as exc:  # PIL raises many types on broken or hostile images
            raise _bad(f"cannot read image {info.filename!r}: {type(exc).__name__}: {exc}") from exc

    def _pixels(self, img, name: str) -> np.ndarray:
        from PIL import Image

        if img.format not in ("PNG", "JPEG"):
            raise _bad(f"{name!r} is {img.format}, not a PNG or JPEG image")
        pixels = img.width * img.height  # the header's size, before a pixel is decoded
        if pixels > self.max_pixels:
            raise _too_many_pixels(name, pixels, self.max_pixels, self.limits)
        if self.channels is None:
            self._allocate(img)
        assert self.size is not None  # given, or set by _allocate
        h, w = self.size
        img = img.convert("L" if self.channels == 1 else "RGB")
        if (img.height, img.width) != (h, w):
            img = img.resize((w, h), Image.Resampling.BILINEAR)
        return np.asarray(img, dtype=np.float32) / 255.0

    def _allocate(self, img) -> None:
        self.channels = 1 if img.mode in GRAY_MODES else 3
        if self.size is None:
            self.size = [img.height, img.width]
            self.limits.check(
                "max_image_size",
                max(self.size),
                f"the longest side of the images ({img.height}x{img.width}; set image_size to resize them)",
            )
        h, w = self.size
        _check_array(self.count, self.channels, h, w, self.limits)
        self.x = np.empty((self.count, self.channels, h, w), dtype=np.float32)


def _too_many_pixels(name: str, pixels: int, max_pixels: int, limits: DataLimits) -> EngineError:
    if max_pixels < limits.max_example_elements:  # the fixed per-image ceiling, not the setting, refused it
        return _bad(f"image {name[:100]!r} has {pixels} pixels; images of more than {max_pixels} pixels are refused")
    return limit_exceeded("max_example_elements", pixels, max_pixels, f"the number of pixels of image {name[:100]!r}")
