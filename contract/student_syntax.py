"""The student argument of the CLI: JSON, or the short form `ARCH:key=value,key=value`."""

from __future__ import annotations

import json


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets or quotes."""
    current: list[str]
    parts, depth, quote, current = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def parse_student(text: str) -> dict:
    """`'mlp:hidden_sizes=[64,32],dropout=0.1'` or a JSON object -> the student spec dict."""
    text = text.strip()
    if text.startswith("{"):
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"student is not valid JSON: {exc}") from None
        if not isinstance(spec, dict):
            raise ValueError("student JSON must be an object")
        return spec
    arch, _, rest = text.partition(":")
    if not arch.strip():
        raise ValueError("student must look like 'mlp:hidden_sizes=[32]' or be a JSON object")
    spec = {"architecture": arch.strip()}
    for item in _split_top_level(rest):
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"student parameter {item!r} must be key=value")
        try:
            spec[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            spec[key.strip()] = raw.strip()
    return spec
