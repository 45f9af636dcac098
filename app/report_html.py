"""The visual report: one self-contained HTML page (inline SVG, inline CSS, no scripts, no external assets).

Every number comes from the job's report.json as it is stored; floats are shown with 4 decimals everywhere
(`fmt`), integers as they are, so a reader can match the page to the JSON.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
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


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _human_bytes(n: Any) -> str:
    if not isinstance(n, int | float):
        return ""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return ""


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
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


def _floor(x: float) -> int:
    i = int(x)
    return i - 1 if x < i else i


def _floor_log10(x: float) -> int:
    return math.floor(math.log10(x)) if x > 0 else 0


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


def _tick_label(t: float) -> str:
    return f"{t:g}"


def line_chart(
    title: str,
    series: Sequence[tuple[str, str, list[tuple[float, float]]]],
    hlines: Sequence[tuple[str, str, float]] = (),
    y_label: str = "",
    x_label: str = "epoch",
    y_range: tuple[float, float] | None = None,
    width: int = 520,
    height: int = 300,
) -> str:
    """An SVG line chart: one polyline per series, dashed horizontal reference lines, axes and a legend."""
    points = [p for _, _, pts in series for p in pts if p[1] is not None]
    if not points:
        return ""
    left, right, bottom = 56, 16, 44
    # The legend sits between the title and the plot, wrapped to the plot's width.
    items = [(n, c, False) for n, c, pts in series if any(p[1] is not None for p in pts)]
    items += [(n, c, True) for n, c, v in hlines if v is not None]
    legend, lx, ly = [], left, 36
    for name, color, dashed in items:
        item_width = 30 + 6 * len(name)
        if lx + item_width > width - right and lx > left:
            lx, ly = left, ly + 15
        legend.append((name, color, dashed, lx, ly))
        lx += item_width
    top = ly + 12
    height += top - 34
    xs = [p[0] for p in points]
    ys = [p[1] for p in points] + [v for _, _, v in hlines if v is not None]
    x_lo, x_hi = min(xs), max(xs)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    if y_range:
        y_lo, y_hi = y_range
        y_lo, y_hi = min(y_lo, min(ys)), max(y_hi, max(ys))
    else:
        y_lo, y_hi = min(ys), max(ys)
        pad = (y_hi - y_lo) * 0.08 or abs(y_hi) * 0.1 or 1.0
        y_lo, y_hi = y_lo - pad, y_hi + pad
        if min(ys) >= 0 > y_lo:
            y_lo = 0.0
    pw, ph = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * pw

    def sy(y: float) -> float:
        return top + (1 - (y - y_lo) / (y_hi - y_lo)) * ph

    out = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{_e(title)}">',
        f'<text x="{left}" y="20" class="ct">{_e(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="plot"/>',
    ]
    for t in _nice_ticks(y_lo, y_hi):
        y = sy(t)
        out.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{_tick_label(t)}</text>'
        )
    for t in _nice_ticks(x_lo, x_hi, 8):
        if float(t).is_integer() or (x_hi - x_lo) < 8:
            x = sx(t)
            out.append(
                f'<text x="{x:.1f}" y="{top + ph + 16}" class="tick" text-anchor="middle">{_tick_label(t)}</text>'
            )
    out.append(f'<text x="{left + pw / 2}" y="{height - 8}" class="axis" text-anchor="middle">{_e(x_label)}</text>')
    if y_label:
        out.append(
            f'<text x="14" y="{top + ph / 2}" class="axis" text-anchor="middle" '
            f'transform="rotate(-90 14 {top + ph / 2})">{_e(y_label)}</text>'
        )
    for name, color, value in hlines:
        if value is None:
            continue
        y = sy(value)
        out.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="{color}" '
            f'stroke-width="1.5" stroke-dasharray="6 4"><title>{_e(name)}: {fmt(value)}</title></line>'
        )
    for name, color, pts in series:
        pts = [p for p in pts if p[1] is not None]
        if not pts:
            continue
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        out.append(
            f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2">'
            f"<title>{_e(name)}</title></polyline>"
        )
        for x, y in pts:
            out.append(
                f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}">'
                f"<title>{_e(name)}, epoch {_e(fmt(x))}: {fmt(y)}</title></circle>"
            )
    for name, color, dashed, lx, ly in legend:
        dash = ' stroke-dasharray="4 3"' if dashed else ""
        out.append(
            f'<line x1="{lx}" x2="{lx + 18}" y1="{ly}" y2="{ly}" stroke="{color}" '
            f'stroke-width="2.5"{dash}/><text x="{lx + 22}" y="{ly + 4}" class="leg">{_e(name)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def bar_chart(
    title: str,
    groups: Sequence[tuple[str, Sequence[tuple[str, str, float | None]]]],
    unit: str = "",
    width: int = 520,
    bar_height: int = 20,
) -> str:
    """Horizontal bars, grouped: [(group label, [(bar label, color, value)])]; values labelled with fmt."""
    rows = [(g, label, color, v) for g, bars in groups for label, color, v in bars if v is not None]
    if not rows:
        return ""
    left, right, top = 150, 150, 34
    peak = max(v for *_, v in rows) or 1.0
    pw = width - left - right
    y = top
    out = []
    for group, bars in groups:
        bars = [b for b in bars if b[2] is not None]
        if not bars:
            continue
        out.append(f'<text x="8" y="{y + 14}" class="axis">{_e(group)}</text>')
        y += 20
        for label, color, value in bars:
            w = max(1.0, value / peak * pw)
            out.append(
                f'<text x="{left - 6}" y="{y + bar_height - 6}" class="tick" text-anchor="end">'
                f'{_e(label)}</text><rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_height}" '
                f'fill="{color}"><title>{_e(label)}: {fmt(value)} {_e(unit)}</title></rect>'
                f'<text x="{left + w + 6:.1f}" y="{y + bar_height - 6}" class="tick">{fmt(value)} '
                f"{_e(unit)}</text>"
            )
            y += bar_height + 4
        y += 8
    height = y + 8
    return (
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{_e(title)}">'
        f'<text x="8" y="20" class="ct">{_e(title)}</text>' + "".join(out) + "</svg>"
    )


def _confusion(report: dict) -> str:
    """The student-vs-teacher confusion on the eval set, when the report carries one."""
    raw = report.get("confusion")
    if not raw:
        return ""
    matrix = raw.get("matrix") if isinstance(raw, dict) else raw
    if not isinstance(matrix, list) or not matrix or not all(isinstance(r, list) for r in matrix):
        return ""
    labels = (raw.get("classes") if isinstance(raw, dict) else None) or report.get("classes") or []
    rows_name = (raw.get("rows") if isinstance(raw, dict) else None) or "teacher"
    cols_name = (raw.get("columns") if isinstance(raw, dict) else None) or "student"
    n = len(matrix)
    labels = [str(labels[i]) if i < len(labels) else str(i) for i in range(max(n, len(matrix[0])))]
    peak = max((v for r in matrix for v in r if isinstance(v, int | float)), default=0) or 1
    head = "".join(f"<th>{_e(labels[j])}</th>" for j in range(len(matrix[0])))
    body = []
    for i, row in enumerate(matrix):
        cells = []
        for j, v in enumerate(row):
            share = (v / peak) if isinstance(v, int | float) else 0
            color = f"rgba(37,99,235,{0.08 + 0.85 * share:.3f})" if i == j else f"rgba(220,38,38,{0.9 * share:.3f})"
            text_color = "#fff" if share > 0.55 else "#111"
            cells.append(f'<td style="background:{color};color:{text_color}">{_e(fmt(v))}</td>')
        body.append(f"<tr><th>{_e(labels[i])}</th>{''.join(cells)}</tr>")
    return (
        f'<section><h2>Student vs teacher on the eval set</h2><p class="note">Rows: {_e(rows_name)}\'s '
        f"prediction; columns: {_e(cols_name)}'s. The diagonal is agreement.</p>"
        f'<table class="confusion"><tr><th>{_e(rows_name)} \\ {_e(cols_name)}</th>{head}</tr>'
        f"{''.join(body)}</table></section>"
    )


def _kv_table(items: Sequence[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in items)
    return f'<table class="kv">{rows}</table>'


def _json_value(value: Any) -> str:
    if isinstance(value, dict | list):
        return f"<code>{_e(json.dumps(value, sort_keys=True))}</code>"
    return _e(fmt(value))


def _summary(report: dict) -> str:
    teacher, student = report.get("teacher") or {}, report.get("student") or {}
    baseline = report.get("baseline") or None
    t_lat, s_lat = teacher.get("latency_ms") or {}, student.get("latency_ms") or {}
    b_lat = (baseline or {}).get("latency_ms") or {}
    speedup = report.get("speedup") or {}
    cols = ["", "teacher", "student"] + (["baseline (no teacher)"] if baseline else [])

    def row(label: str, t: Any, s: Any, b: Any = None, extra: str = "") -> str:
        cells = [t, s] + ([b] if baseline else [])
        tds = "".join(f'<td class="num">{_e(fmt(c))}{extra if c is not None and extra else ""}</td>' for c in cells)
        return f"<tr><th>{_e(label)}</th>{tds}</tr>"

    b = baseline or {}
    rows = [
        row("accuracy", teacher.get("accuracy"), student.get("accuracy"), b.get("accuracy")),
        row("agreement with teacher", None, student.get("agreement"), b.get("agreement")),
        row(
            "parameters",
            teacher.get("num_parameters"),
            student.get("num_parameters"),
            b.get("num_parameters"),
        ),
        row("size (bytes)", teacher.get("size_bytes"), student.get("size_bytes"), b.get("size_bytes")),
    ]
    for key in sorted(set(t_lat) | set(s_lat)):
        rows.append(row(f"latency {key.replace('_', ' ')} (ms)", t_lat.get(key), s_lat.get(key), b_lat.get(key)))
    for key in sorted(speedup):
        rows.append(row(f"speedup {key.replace('_', ' ')}", None, speedup.get(key), None, "×"))
    rows.append(row("compression (parameters)", None, report.get("compression_ratio"), None, "×"))
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    return f'<table class="summary"><tr>{head}</tr>{"".join(rows)}</table>'


def _history_table(history: list[dict]) -> str:
    if not history:
        return ""
    keys = ["epoch"] + sorted({k for h in history for k in h if k != "epoch"})
    head = "".join(f"<th>{_e(k)}</th>" for k in keys)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{_e(fmt(h.get(k)))}</td>' for k in keys) + "</tr>" for h in history
    )
    return (
        f"<details><summary>Per-epoch numbers ({len(history)} epochs)</summary>"
        f'<table class="history"><tr>{head}</tr>{body}</table></details>'
    )


def _curves(report: dict) -> str:
    history = report.get("history") or []
    teacher, baseline = report.get("teacher") or {}, report.get("baseline") or None
    baseline_history = report.get("baseline_history") or (baseline or {}).get("history") or []

    def pts(rows: list[dict], key: str) -> list[tuple[float, float]]:
        return [(r["epoch"], r[key]) for r in rows if r.get("epoch") is not None and r.get(key) is not None]

    loss_series = [("student train loss", STUDENT, pts(history, "train_loss"))]
    if baseline_history:
        loss_series.append(("baseline train loss", BASELINE, pts(baseline_history, "train_loss")))
    loss = line_chart("Training loss per epoch", loss_series, y_label="loss")

    acc_series = [
        ("student accuracy", STUDENT, pts(history, "eval_accuracy")),
        ("student agreement", AGREEMENT, pts(history, "eval_agreement")),
    ]
    hlines = [("teacher accuracy (eval split)", TEACHER, teacher.get("accuracy"))]
    if baseline_history:
        acc_series.append(("baseline accuracy", BASELINE, pts(baseline_history, "eval_accuracy")))
    elif baseline and baseline.get("accuracy") is not None:
        hlines.append(("baseline accuracy (eval split)", BASELINE, baseline.get("accuracy")))
    acc = line_chart("Validation accuracy and agreement per epoch", acc_series, hlines, y_label="fraction")
    if not (loss or acc):
        return ""
    return (
        f'<section><h2>Training curves</h2><div class="charts">{loss}{acc}</div>'
        f'<p class="note">Curves are measured on the validation slice held out of train (used to pick the '
        f"best epoch{', ' + _e(fmt(report.get('best_epoch'))) if report.get('best_epoch') else ''}); "
        f"the teacher line and the table above are on the eval split.</p>"
        f"{_history_table(history)}</section>"
    )


def _bars(report: dict) -> str:
    teacher, student = report.get("teacher") or {}, report.get("student") or {}
    size = bar_chart(
        "File size",
        [
            (
                "size",
                [
                    ("teacher", TEACHER, teacher.get("size_bytes")),
                    ("student", STUDENT, student.get("size_bytes")),
                ],
            )
        ],
        unit="bytes",
    )
    t_lat, s_lat = teacher.get("latency_ms") or {}, student.get("latency_ms") or {}
    groups = [
        (key.replace("_", " "), [("teacher", TEACHER, t_lat.get(key)), ("student", STUDENT, s_lat.get(key))])
        for key in sorted(set(t_lat) | set(s_lat))
    ]
    latency = bar_chart("CPU latency", groups, unit="ms")
    if not (size or latency):
        return ""
    return f'<section><h2>Size and latency</h2><div class="charts">{size}{latency}</div></section>'


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#111;background:#f8fafc}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:1.5rem;margin:0 0 4px} h2{font-size:1.15rem;margin:28px 0 10px}
section{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:8px 18px 16px;margin:16px 0}
table{border-collapse:collapse;font-size:.9rem} th,td{padding:4px 10px;border-bottom:1px solid #e2e8f0}
th{text-align:left;font-weight:600} td.num{text-align:right;font-variant-numeric:tabular-nums}
table.summary td{min-width:110px} .note{color:#475569;font-size:.85rem}
.charts{display:flex;flex-wrap:wrap;gap:12px} svg.chart{background:#fff;max-width:100%;height:auto}
svg .plot{fill:#fff;stroke:#cbd5e1} svg .grid{stroke:#eef2f7} svg .tick{font-size:11px;fill:#475569}
svg .axis{font-size:12px;fill:#334155} svg .ct{font-size:14px;font-weight:600;fill:#111}
svg .leg{font-size:11px;fill:#334155} code{font-size:.8rem;word-break:break-all}
table.confusion td{text-align:center;min-width:28px;font-size:.8rem} .status{font-weight:600}
"""


def render_report_html(report: dict, job: dict | None = None, artifacts: Sequence[dict] = ()) -> str:
    """The report page of a job: summary, curves, size/latency bars, confusion, configuration, checksums."""
    job = job or {}
    report = finite_numbers(report)
    job_id = report.get("job_id") or job.get("id") or ""
    meta = [("job", _e(job_id)), ("status", _e(job.get("status", "")))] if job else [("job", _e(job_id))]
    meta += [
        ("device", _e(fmt(report.get("device")))),
        ("train seconds", _e(fmt(report.get("train_seconds")))),
        ("eval examples", _e(fmt(report.get("eval_examples")))),
        ("classes", _e(", ".join(map(str, report.get("classes") or [])))),
        ("loss", _e(fmt(report.get("loss")))),
        ("teacher outputs cache", _e(fmt(report.get("teacher_outputs_cache")))),
    ]
    config = []
    if job:
        config += [
            ("teacher", _e(job.get("teacher_id"))),
            ("train dataset", _e(job.get("train_dataset_id"))),
            ("eval dataset", _e(fmt(job.get("eval_dataset_id") or "seeded 20% of train"))),
            ("student", _json_value(job.get("student"))),
            ("export", _e(", ".join(job.get("export") or []))),
            ("baseline", _e(fmt(bool(job.get("baseline"))))),
        ]
        for key, value in sorted((job.get("hyperparameters") or {}).items()):
            config.append((key, _json_value(value)))
    art_rows = "".join(
        f"<tr><td>{_e(a.get('name'))}</td><td>{_e(a.get('format'))}</td>"
        f'<td class="num">{_e(fmt(a.get("size_bytes")))}'
        f"</td><td><code>{_e(a.get('sha256'))}</code></td></tr>"
        for a in artifacts
    )
    artifacts_html = (
        f"<section><h2>Artifacts</h2><table><tr><th>name</th><th>format</th><th>bytes</th>"
        f"<th>sha256</th></tr>{art_rows}</table></section>"
        if artifacts
        else ""
    )
    config_html = f"<section><h2>Configuration</h2>{_kv_table(config)}</section>" if config else ""
    student = report.get("student") or {}
    headline = ""
    if student.get("accuracy") is not None and (report.get("teacher") or {}).get("accuracy") is not None:
        headline = (
            f"<p>Student accuracy <b>{fmt(student['accuracy'])}</b> vs teacher "
            f"<b>{fmt(report['teacher']['accuracy'])}</b>, agreement <b>{fmt(student.get('agreement'))}"
            f"</b>, <b>{fmt(report.get('compression_ratio'))}×</b> fewer parameters.</p>"
        )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Distillery report {_e(job_id)}</title><style>{CSS}</style></head><body><main>"
        f"<h1>Distillation report</h1>{headline}"
        f"<section><h2>Teacher vs student</h2>{_summary(report)}{_kv_table(meta)}</section>"
        f"{_curves(report)}{_bars(report)}{_confusion(report)}{config_html}{artifacts_html}"
        "</main></body></html>"
    )
