"""Numbers as the report page shows them: floats with 4 decimals everywhere, so a reader can match the page to
report.json; escaping; NaN and infinities as missing; axis ticks."""

from __future__ import annotations

import html
import math
from typing import Any

STUDENT, TEACHER, BASELINE, AGREEMENT = "#2563eb", "#dc2626", "#7c3aed", "#059669"
DECIMALS = 4


def fmt(value: Any) -> str:
    """The one number format of the page: floats with 4 decimals, ints as they are, '—' for missing."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{DECIMALS}f}"
    return str(value)


def esc(value: Any) -> str:
    """Any value as HTML text, quotes escaped (it goes into attributes too)."""
    return html.escape(str(value), quote=True)


def finite_numbers(value: Any, depth: int = 0) -> Any:
    """The report with NaN and infinities (a diverged loss) as None, so they show as missing; nesting deeper
    than any report's is cut."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth > 32:
        return None
    if isinstance(value, dict):
        return {k: finite_numbers(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_numbers(v, depth + 1) for v in value]
    return value


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round axis values (steps of 1, 2, 2.5 or 5 times a power of ten) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / count
    if not (math.isfinite(raw) and raw > 0):
        return []
    magnitude = 10.0 ** _floor_log10(raw)
    step = next((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw), 0.0)
    if not (math.isfinite(step) and step > 0):
        return []
    start = step * _floor(lo / step)
    ticks, t = [], start
    # Bounded: at 1e16 and beyond, t + step can equal t.
    for _ in range(4 * count + 4):
        if t > hi + step * 1e-9:
            break
        if t >= lo - step * 1e-9:
            ticks.append(round(t, 10))
        t += step
    return ticks


def tick_label(t: float) -> str:
    """An axis value as short text (0.25, 1e+06)."""
    return f"{t:g}"


def _floor(x: float) -> int:
    i = int(x)
    return i - 1 if x < i else i


def _floor_log10(x: float) -> int:
    return math.floor(math.log10(x)) if x > 0 else 0
