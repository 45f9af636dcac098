"""The report's "Student search" section, when the service chose the student to fit a budget: the budget and the
machine, a scatter of the candidates (latency against validation accuracy) with the Pareto front and the chosen
student, and a table of every candidate. Untrained candidates (over the budget before training) have no accuracy:
the chart marks them with a cross on a strip under the plot, at their latency; the table says why not."""

from __future__ import annotations

import math
from typing import Any

from htmlreport.latency import as_dict, setup_label
from htmlreport.numbers import STUDENT, TEACHER, esc, fmt, nice_ticks, tick_label

FRONT, CHOSEN, MUTED = "#059669", "#d97706", "#64748b"
WIDTH, LEFT, RIGHT, TOP, PLOT_HEIGHT, STRIP = 720, 64, 24, 62, 260, 28


def _num(value: Any) -> float | None:
    """A finite number as a float, else None (strings, booleans, NaN, ints too big for a float)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _batch_key(budget: dict) -> str:
    """The latency key the chart plots: the budget's first latency key, else batch_1."""
    limits = as_dict(budget.get("max_latency_ms"))
    return str(next(iter(limits), "batch_1"))


def _student(value: Any) -> str:
    """A student spec in one short line: "mlp, hidden sizes [32, 16]"."""
    if not isinstance(value, dict):
        return fmt(value)
    parts = [str(value["architecture"])] if value.get("architecture") is not None else []
    for key, item in value.items():
        if key != "architecture":
            shown = f"[{', '.join(map(str, item))}]" if isinstance(item, list) else fmt(item)
            parts.append(f"{str(key).replace('_', ' ')} {shown}")
    return ", ".join(parts) or "—"


class _Axis:
    """Data to pixels along one axis, linear or log10; `start` maps the low end, `end` the high end."""

    def __init__(self, values: list[float], start: float, end: float, log: bool, floor_zero: bool = False):
        self.log = log
        ts = [math.log10(v) for v in values] if log else values
        lo, hi = min(ts), max(ts)
        pad = (hi - lo) * 0.07 or (0.1 if log else abs(hi) * 0.1 or 1.0)
        self.lo, self.hi = lo - pad, hi + pad
        if floor_zero and not log and lo >= 0 > self.lo:
            self.lo = 0.0
        self.start, self.end = start, end

    def at(self, value: float) -> float:
        t = math.log10(value) if self.log else value
        return self.start + (t - self.lo) / (self.hi - self.lo) * (self.end - self.start)

    def ticks(self) -> list[float]:
        if not self.log:
            return nice_ticks(self.lo, self.hi, 6)
        span = self.hi - self.lo
        steps = (1, 2, 5) if span <= 3 else (1,)
        every = max(1, math.ceil(span / 8))
        decades = range(max(math.floor(self.lo), -300), min(math.ceil(self.hi), 300) + 1, every)
        return [m * 10.0**d for d in decades for m in steps if self.lo <= math.log10(m) + d <= self.hi]


def _points(search: dict, candidates: list[dict], key: str) -> tuple[list[dict], list[dict]]:
    """The plotted candidates (latency and a score) and the strip's (latency, no score), with what to draw."""
    front = search.get("front") if isinstance(search.get("front"), list) else None
    points: list[dict] = []
    strip: list[dict] = []
    for c in candidates:
        x = _num(as_dict(c.get("latency_ms")).get(key))
        if x is None:
            continue
        accuracy = _num(c.get("validation_accuracy"))
        y = accuracy if accuracy is not None else _num(c.get("validation_metric"))
        trial = c.get("trial")
        on_front = (trial in front) if front is not None else c.get("on_front") is True
        tip = (
            f"trial {fmt(trial)}: {_student(c.get('student'))}, {fmt(c.get('parameters'))} parameters, "
            f"{fmt(x)} ms at {key.replace('_', ' ')}, "
            + (f"{'accuracy' if accuracy is not None else 'score'} {fmt(y)}" if y is not None else "not trained")
            + (f"; {c['why_not']}" if c.get("why_not") else "")
        )
        point = {"trial": trial, "x": x, "y": y, "fits": c.get("fits") is not False, "front": on_front, "tip": tip}
        point["accuracy"] = accuracy is not None
        point["chosen"] = trial is not None and trial == search.get("chosen")
        (points if y is not None else strip).append(point)
    return points, strip


def _legend(points: list[dict], strip: list[dict], budget: float | None) -> str:
    """One row of legend items under the title, only for the marks the chart draws."""
    icons = {
        "fits the budget": f'<circle cx="6" cy="0" r="4.5" fill="{STUDENT}"/>',
        "over the budget": f'<circle cx="6" cy="0" r="4.5" fill="#fff" stroke="{TEACHER}" stroke-width="2"/>',
        "Pareto front": f'<line x1="0" x2="14" y1="0" y2="0" stroke="{FRONT}" stroke-width="2"/>',
        "chosen": f'<circle cx="6" cy="0" r="7" fill="none" stroke="{CHOSEN}" stroke-width="2.5"/>',
        "not trained": f'<text x="6" y="4" text-anchor="middle" fill="{MUTED}" font-size="13">×</text>',
        "latency budget": f'<line x1="0" x2="14" y1="0" y2="0" stroke="{TEACHER}" stroke-dasharray="4 3"/>',
    }
    shown = {
        "fits the budget": any(p["fits"] for p in points),
        "over the budget": any(not p["fits"] for p in points),
        "Pareto front": any(p["front"] for p in points),
        "chosen": any(p["chosen"] for p in points),
        "not trained": bool(strip),
        "latency budget": budget is not None,
    }
    out, x = [], LEFT
    for name, icon in icons.items():
        if shown[name]:
            out.append(f'<g transform="translate({x} 40)">{icon}<text x="18" y="4" class="leg">{name}</text></g>')
            x += 34 + 6 * len(name)
    return "".join(out)


def _axes(xa: _Axis, ya: _Axis, bottom: float, x_label: str, y_label: str) -> list[str]:
    """Grid lines and ticks on both axes, and the axis labels."""
    out = []
    for t in ya.ticks():
        y = ya.at(t)
        out.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{tick_label(t)}</text>'
        )
    for t in xa.ticks():
        x = xa.at(t)
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{TOP + PLOT_HEIGHT}" class="grid"/>'
            f'<text x="{x:.1f}" y="{bottom + 16}" class="tick" text-anchor="middle">{tick_label(t)}</text>'
        )
    mid_y = TOP + PLOT_HEIGHT / 2
    return [
        *out,
        f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{bottom + 38}" class="axis" text-anchor="middle">'
        f"{esc(x_label)}</text>",
        f'<text x="14" y="{mid_y}" class="axis" text-anchor="middle" transform="rotate(-90 14 {mid_y})">'
        f"{esc(y_label)}</text>",
    ]


def _marks(xa: _Axis, ya: _Axis, points: list[dict], strip: list[dict]) -> list[str]:
    """The front's line, a dot per trained candidate (hollow when over the budget), the chosen one ringed and
    labelled, and a cross per untrained candidate on the strip."""
    front = sorted((p for p in points if p["front"]), key=lambda p: p["x"])
    coords = " ".join(f"{xa.at(p['x']):.1f},{ya.at(p['y']):.1f}" for p in front)
    line = f'<polyline class="front" points="{coords}" fill="none" stroke="{FRONT}" stroke-width="2"/>'
    out = [line] if front else []
    for p in points:
        x, y = xa.at(p["x"]), ya.at(p["y"])
        look = f'fill="{STUDENT}"' if p["fits"] else f'fill="#fff" stroke="{TEACHER}" stroke-width="2"'
        kind = ("fit" if p["fits"] else "over") + (" on-front" if p["front"] else "")
        out.append(
            f'<circle class="pt {kind}" data-trial="{esc(p["trial"])}" cx="{x:.1f}" cy="{y:.1f}" r="5" {look}>'
            f"<title>{esc(p['tip'])}</title></circle>"
        )
        if p["chosen"]:
            right, ly = x > WIDTH - RIGHT - 130, y - 10 if y > TOP + 24 else y + 22
            out.append(
                f'<circle class="chosen" cx="{x:.1f}" cy="{y:.1f}" r="10" fill="none" stroke="{CHOSEN}" '
                f'stroke-width="2.5"/><text x="{x - 14 if right else x + 14:.1f}" y="{ly:.1f}" '
                f'class="leg" font-weight="600" text-anchor="{"end" if right else "start"}">'
                f"chosen: trial {esc(fmt(p['trial']))}</text>"
            )
    for p in strip:
        out.append(
            f'<text class="untrained" data-trial="{esc(p["trial"])}" x="{xa.at(p["x"]):.1f}" '
            f'y="{TOP + PLOT_HEIGHT + STRIP / 2 + 5:.1f}" text-anchor="middle" fill="{MUTED}" font-size="15">×'
            f"<title>{esc(p['tip'])}</title></text>"
        )
    return out


def _chart(search: dict, candidates: list[dict]) -> str:
    """The scatter: x latency at the budget's batch (log when it spans over 10x), y validation accuracy."""
    budget = as_dict(search.get("budget"))
    key = _batch_key(budget)
    limit = _num(as_dict(budget.get("max_latency_ms")).get(key))
    points, strip = _points(search, candidates, key)
    if not points:
        return ""
    xs = [p["x"] for p in points + strip] + ([limit] if limit is not None else [])
    log = min(xs) > 0 and max(xs) / min(xs) > 10
    ys = [p["y"] for p in points]
    if not all(math.isfinite(v) for v in (max(xs) - min(xs), max(ys) - min(ys))):
        return ""
    bottom = TOP + PLOT_HEIGHT + (STRIP if strip else 0)
    xa = _Axis(xs, LEFT, WIDTH - RIGHT, log)
    ya = _Axis(ys, TOP + PLOT_HEIGHT, TOP, False, floor_zero=True)
    with_accuracy = sum(p["accuracy"] for p in points)
    y_label = "validation accuracy" if with_accuracy == len(points) else "validation score"
    if 0 < with_accuracy < len(points):
        y_label = "validation accuracy (score where none)"
    x_label = f"latency at {key.replace('_', ' ')} (ms{', log scale' if log else ''})"
    label = f"Student search: {y_label} against {x_label} for {len(points)} trained candidates"
    height = bottom + 48
    out = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" '
        f'height="{height}" role="img" aria-label="{esc(label)}">',
        f'<text x="{LEFT}" y="20" class="ct">Candidates: {esc(y_label)} against latency</text>',
        _legend(points, strip, limit),
        f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" height="{PLOT_HEIGHT}" class="plot"/>',
    ]
    if strip:
        out.append(
            f'<rect x="{LEFT}" y="{TOP + PLOT_HEIGHT}" width="{WIDTH - LEFT - RIGHT}" height="{STRIP}" '
            f'fill="#f1f5f9"/><text x="{LEFT - 6}" y="{TOP + PLOT_HEIGHT + 18}" class="tick" '
            'text-anchor="end">untrained</text>'
        )
    out += _axes(xa, ya, bottom, x_label, y_label)
    if limit is not None:
        bx = xa.at(limit)
        out.append(
            f'<line class="budget" data-ms="{limit}" x1="{bx:.1f}" x2="{bx:.1f}" y1="{TOP}" y2="{bottom}" '
            f'stroke="{TEACHER}" stroke-width="1.5" stroke-dasharray="6 4"><title>latency budget: {fmt(limit)} ms'
            f'</title></line><text x="{bx + 4:.1f}" y="{TOP + PLOT_HEIGHT - 6}" class="tick">'
            f"budget {fmt(limit)} ms</text>"
        )
    note = "Each dot is a trained candidate (hollow: over the budget); the line joins the Pareto front."
    if strip:
        note += " Crosses on the strip under the plot: candidates not trained, over the budget before training."
    return "".join([*out, *_marks(xa, ya, points, strip), f'</svg><p class="note">{note}</p>'])


def _table(search: dict, candidates: list[dict]) -> str:
    """One row per candidate as the report lists them (latency keys batch_1 before batch_64); the chosen in bold."""
    keys = sorted({str(k) for c in candidates for k in as_dict(c.get("latency_ms"))}, key=lambda k: (len(k), k))
    front = search.get("front") if isinstance(search.get("front"), list) else None
    heads = ["trial", "student", "parameters", *(f"latency {k.replace('_', ' ')} (ms)" for k in keys), "fits"]
    heads += ["validation accuracy", "agreement", "validation score", "epochs", "seconds", "on front", "chosen"]
    rows = []
    for c in candidates:
        trial = c.get("trial")
        latency = as_dict(c.get("latency_ms"))
        on_front = (trial in front) if front is not None else c.get("on_front")
        chosen = trial is not None and trial == search.get("chosen")
        cells = [c.get("parameters"), *(latency.get(k) for k in keys), c.get("fits"), c.get("validation_accuracy")]
        cells += [c.get("validation_agreement"), c.get("validation_metric"), c.get("epochs"), c.get("seconds")]
        tds = f'<td class="num">{esc(fmt(trial))}</td><td class="arch">{esc(_student(c.get("student")))}</td>'
        tds += "".join(f'<td class="num">{esc(fmt(v))}</td>' for v in [*cells, on_front, chosen])
        attrs = ' class="chosen"' if chosen else ""
        rows.append(f"<tr{attrs}>{tds}<td class='why'>{esc(c.get('why_not') or '')}</td></tr>")
    head = "".join(f"<th>{esc(h)}</th>" for h in [*heads, "why not"])
    return f'<div class="scroll"><table class="candidates"><tr>{head}</tr>{"".join(rows)}</table></div>'


def _budget_text(budget: dict) -> str:
    """The budget in words: "at most 50000 parameters, 1.5000 ms at batch 64"."""
    parts = [f"at most {fmt(budget['max_parameters'])} parameters"] if budget.get("max_parameters") is not None else []
    return ", ".join(parts + _ms(budget.get("max_latency_ms"))) or "no limit"


def _ms(latency: Any) -> list[str]:
    """Latencies per batch key in words: ["1.5000 ms at batch 64"]."""
    return [f"{fmt(v)} ms at {str(k).replace('_', ' ')}" for k, v in as_dict(latency).items() if v is not None]


def _intro(search: dict, candidates: list[dict]) -> str:
    """A sentence on the budget and the machine, then the sampler, the objective, the count and the time."""
    target = setup_label(search.get("target"))
    measured = f", latencies measured with {target}" if target else ""
    text = f"The service chose the student to fit a budget of {_budget_text(as_dict(search.get('budget')))}{measured}."
    final, within = _ms(search.get("final_latency_ms")), search.get("final_within_budget")
    if final:
        verdict = " (within the budget)" if within is True else " (over the budget)" if within is False else ""
        text += f" Trained in full, the chosen student measured {', '.join(final)}{verdict}."
    notes = [f"{len(candidates)} candidates in {fmt(search.get('seconds'))} s"]
    if search.get("chosen") is not None:
        notes.append(f"trial {fmt(search.get('chosen'))} chosen (the most accurate that fits) and trained in full")
    for name in ("sampler", "objective"):
        if search.get(name):
            notes.append(f"{name}: {fmt(search.get(name))}")
    return f'<p>{esc(text)}</p><p class="note">{esc("; ".join(notes))}.</p>'


def student_search_section(report: dict) -> str:
    """The student search, when the service chose the student to fit a budget; nothing otherwise."""
    search = as_dict(as_dict(report).get("student_search"))
    if not search:
        return ""
    raw = search.get("candidates")
    candidates = [c for c in raw if isinstance(c, dict)] if isinstance(raw, list) else []
    chart = _chart(search, candidates)
    table = _table(search, candidates) if candidates else '<p class="note">No candidates recorded.</p>'
    return f'<section id="student-search"><h2>Student search</h2>{_intro(search, candidates)}{chart}{table}</section>'
