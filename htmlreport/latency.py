"""What each latency figure of the report was measured with: device, runtime, threads and input shape."""

from __future__ import annotations

from typing import Any

from htmlreport.numbers import esc, fmt

SIDES = ("teacher", "student", "baseline")


def as_dict(value: Any) -> dict:
    """The value when it is a dict, else an empty one (old or partial reports)."""
    return value if isinstance(value, dict) else {}


def setup_label(setup: Any) -> str:
    """A latency setup as plain text: "onnxruntime on cpu AMD EPYC, 2 threads, input [64]"."""
    setup = as_dict(setup)
    if not setup:
        return ""
    runtime, device = setup.get("runtime"), setup.get("device")
    parts = [" on ".join(str(p) for p in (runtime, device) if p)]
    threads = setup.get("threads")
    if threads:
        parts.append(f"{fmt(threads)} thread{'' if threads == 1 else 's'}")
    shape = setup.get("input_shape")
    if isinstance(shape, list):
        parts.append(f"input [{', '.join(map(str, shape))}]")
    if setup.get("skipped"):
        parts.append(f"not measured: {setup['skipped']}")
    return ", ".join(p for p in parts if p)


def latency_notes(report: dict) -> str:
    """One line per measured side and device kind, saying what its latency figures were measured with."""
    items = []
    for kind, key in (("CPU", "latency"), ("GPU", "latency_cuda")):
        for side in SIDES:
            label = setup_label(as_dict(report.get(side)).get(key))
            if label:
                items.append(f"<li>{esc(kind)} latency, {esc(side)}: {esc(label)}</li>")
    if not items:
        return ""
    return f'<p class="note">Latency measured with:</p><ul class="note">{"".join(items)}</ul>'
