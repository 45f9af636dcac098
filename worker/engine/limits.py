"""Caps on what a dataset may make the engine allocate, checked before anything is allocated.

A small hostile upload can describe a huge dataset: a 1 MB `.npz` of compressed zeros that decompresses to
gigabytes, a label 10**7 that makes ten million classes, an `image_size` of 60000x60000. The readers in
data.py, text.py and images.py look at the declared sizes first (the .npy header, the image header, the
options) and refuse with EngineError("limit_exceeded"), whose message names the cap, the value found and the
server setting (DISTILLERY_MAX_*) an operator would raise. `DataLimits` travels to the validation child as JSON.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from worker.engine.errors import EngineError

LIMIT_EXCEEDED = "limit_exceeded"
MAX_CLASS_NAME_CHARS = 256  # a class name is a name, not a text: long ones would bloat every info, report, manifest

# The server setting that sets each cap (app/settings.py, read from the environment).
SETTINGS = {
    "max_classes": "DISTILLERY_MAX_CLASSES",
    "max_example_elements": "DISTILLERY_MAX_EXAMPLE_ELEMENTS",
    "max_dataset_bytes": "DISTILLERY_MAX_DATASET_BYTES",
    "max_image_size": "DISTILLERY_MAX_IMAGE_SIZE",
    "max_tokens": "DISTILLERY_MAX_TOKENS",
}


@dataclass(frozen=True)
class DataLimits:
    """Caps on a dataset's size; defaults suit one GPU worker, a server operator changes them by setting."""

    max_classes: int = 10_000  # classes: the largest integer label + 1, or the distinct string labels
    max_example_elements: int = 16_777_216  # values in one example (and pixels in one source image)
    max_dataset_bytes: int = 8 * 1024**3  # bytes the examples take in memory, decompressed
    max_image_size: int = 1024  # longest side, in pixels, of the images an image dataset is resized to
    max_tokens: int = 8192  # tokens per example of a text dataset (its max_length)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise EngineError("invalid_config", f"data limit {f.name} must be a positive integer, got {value!r}")

    def to_dict(self) -> dict[str, int]:
        """The limits as JSON-able data (for the validation child's request)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping | None) -> DataLimits:
        """Limits from `to_dict()` output; missing keys keep their defaults, unknown keys are an error."""
        d = dict(d or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise EngineError("invalid_config", f"unknown data limit(s) {unknown}; known: {sorted(known)}")
        return cls(**d)

    def check(self, name: str, found: int, what: str) -> None:
        """Raise limit_exceeded when `found` is above the cap `name`; `what` says what was counted."""
        cap = getattr(self, name)
        if found > cap:
            raise limit_exceeded(name, found, cap, what)


def resolve(limits: DataLimits | None) -> DataLimits:
    """The given limits, or the defaults."""
    return limits if limits is not None else DataLimits()


def limit_exceeded(name: str, found: int, cap: int, what: str) -> EngineError:
    """EngineError("limit_exceeded") naming the cap, the value found and the setting that raises the cap."""
    return EngineError(
        LIMIT_EXCEEDED,
        f"{what} is {found}, above the limit {name}={cap} "
        f"(a server operator can raise it with the setting {SETTINGS[name]})",
    )


def check_class_names(names) -> None:
    """Refuse class names longer than MAX_CLASS_NAME_CHARS characters (EngineError invalid_dataset)."""
    for name in names:
        if len(name) > MAX_CLASS_NAME_CHARS:
            raise EngineError(
                "invalid_dataset",
                f"a class name is {len(name)} characters long ({name[:40]!r}...); class names may have at most "
                f"{MAX_CLASS_NAME_CHARS} (is the label column really a label?)",
            )


def short_list(names: Collection, limit: int = 20) -> str:
    """A list for a message, kept short: its first `limit` entries and how many more there are."""
    head = list(itertools.islice(names, limit))
    more = len(names) - len(head)
    return f"{head} and {more} more" if more > 0 else str(head)
