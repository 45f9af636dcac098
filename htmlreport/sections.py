"""The parts of the report page, each from report.json alone: summary, curves, bars, confusion, tables."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from htmlreport.charts import bar_chart, line_chart
from htmlreport.numbers import AGREEMENT, BASELINE, STUDENT, TEACHER, esc, fmt


def confusion(report: dict) -> str:
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
    head = "".join(f"<th>{esc(labels[j])}</th>" for j in range(len(matrix[0])))
    body = []
    for i, row in enumerate(matrix):
        cells = []
        for j, v in enumerate(row):
            share = (v / peak) if isinstance(v, int | float) else 0
            color = f"rgba(37,99,235,{0.08 + 0.85 * share:.3f})" if i == j else f"rgba(220,38,38,{0.9 * share:.3f})"
            text_color = "#fff" if share > 0.55 else "#111"
            cells.append(f'<td style="background:{color};color:{text_color}">{esc(fmt(v))}</td>')
        body.append(f"<tr><th>{esc(labels[i])}</th>{''.join(cells)}</tr>")
    return (
        f'<section><h2>Student vs teacher on the eval set</h2><p class="note">Rows: {esc(rows_name)}\'s '
        f"prediction; columns: {esc(cols_name)}'s. The diagonal is agreement.</p>"
        f'<table class="confusion"><tr><th>{esc(rows_name)} \\ {esc(cols_name)}</th>{head}</tr>'
        f"{''.join(body)}</table></section>"
    )


def kv_table(items: Sequence[tuple[str, Any]]) -> str:
    """A two-column table; values are HTML already."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in items)
    return f'<table class="kv">{rows}</table>'


def json_value(value: Any) -> str:
    """A configuration value as HTML: objects as compact JSON, numbers with fmt."""
    if isinstance(value, dict | list):
        return f"<code>{esc(json.dumps(value, sort_keys=True))}</code>"
    return esc(fmt(value))


def summary(report: dict) -> str:
    """Teacher vs student (and the baseline): accuracy, agreement, parameters, size, latency, speedup."""
    teacher, student = report.get("teacher") or {}, report.get("student") or {}
    baseline = report.get("baseline") or None
    t_lat, s_lat = teacher.get("latency_ms") or {}, student.get("latency_ms") or {}
    b_lat = (baseline or {}).get("latency_ms") or {}
    speedup = report.get("speedup") or {}
    cols = ["", "teacher", "student"] + (["baseline (no teacher)"] if baseline else [])

    def row(label: str, t: Any, s: Any, b: Any = None, extra: str = "") -> str:
        cells = [t, s] + ([b] if baseline else [])
        tds = "".join(f'<td class="num">{esc(fmt(c))}{extra if c is not None and extra else ""}</td>' for c in cells)
        return f"<tr><th>{esc(label)}</th>{tds}</tr>"

    b = baseline or {}
    rows = [
        row("accuracy", teacher.get("accuracy"), student.get("accuracy"), b.get("accuracy")),
        row("agreement with teacher", None, student.get("agreement"), b.get("agreement")),
        row("parameters", teacher.get("num_parameters"), student.get("num_parameters"), b.get("num_parameters")),
        row("size (bytes)", teacher.get("size_bytes"), student.get("size_bytes"), b.get("size_bytes")),
    ]
    for key in sorted(set(t_lat) | set(s_lat)):
        rows.append(row(f"latency {key.replace('_', ' ')} (ms)", t_lat.get(key), s_lat.get(key), b_lat.get(key)))
    for key in sorted(speedup):
        rows.append(row(f"speedup {key.replace('_', ' ')}", None, speedup.get(key), None, "×"))
    t_gpu, s_gpu = teacher.get("latency_ms_cuda") or {}, student.get("latency_ms_cuda") or {}
    b_gpu = b.get("latency_ms_cuda") or {}
    for key in sorted(set(t_gpu) | set(s_gpu)):
        rows.append(row(f"GPU latency {key.replace('_', ' ')} (ms)", t_gpu.get(key), s_gpu.get(key), b_gpu.get(key)))
    speedup_gpu = report.get("speedup_cuda") or {}
    for key in sorted(speedup_gpu):
        rows.append(row(f"GPU speedup {key.replace('_', ' ')}", None, speedup_gpu.get(key), None, "×"))
    rows.append(row("compression (parameters)", None, report.get("compression_ratio"), None, "×"))
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    return f'<table class="summary"><tr>{head}</tr>{"".join(rows)}</table>'


def _history_table(history: list[dict]) -> str:
    if not history:
        return ""
    keys = ["epoch"] + sorted({k for h in history for k in h if k != "epoch"})
    head = "".join(f"<th>{esc(k)}</th>" for k in keys)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{esc(fmt(h.get(k)))}</td>' for k in keys) + "</tr>" for h in history
    )
    return (
        f"<details><summary>Per-epoch numbers ({len(history)} epochs)</summary>"
        f'<table class="history"><tr>{head}</tr>{body}</table></details>'
    )


def _points(rows: list[dict], key: str) -> list[tuple[float, float]]:
    if key.startswith("validation_") and not any(key in r for r in rows):
        key = "eval_" + key.removeprefix("validation_")  # reports written before the rename
    return [(r["epoch"], r[key]) for r in rows if r.get("epoch") is not None and r.get(key) is not None]


def curves(report: dict) -> str:
    """Training loss and validation accuracy/agreement per epoch, with the per-epoch numbers below."""
    history = report.get("history") or []
    teacher, baseline = report.get("teacher") or {}, report.get("baseline") or None
    baseline_history = report.get("baseline_history") or (baseline or {}).get("history") or []
    loss_series = [("student train loss", STUDENT, _points(history, "train_loss"))]
    if baseline_history:
        loss_series.append(("baseline train loss", BASELINE, _points(baseline_history, "train_loss")))
    loss = line_chart("Training loss per epoch", loss_series, y_label="loss")
    acc_series = [
        ("student accuracy", STUDENT, _points(history, "validation_accuracy")),
        ("student agreement", AGREEMENT, _points(history, "validation_agreement")),
    ]
    hlines = [("teacher accuracy (eval split)", TEACHER, teacher.get("accuracy"))]
    if baseline_history:
        acc_series.append(("baseline accuracy", BASELINE, _points(baseline_history, "validation_accuracy")))
    elif baseline and baseline.get("accuracy") is not None:
        hlines.append(("baseline accuracy (eval split)", BASELINE, baseline.get("accuracy")))
    acc = line_chart("Validation accuracy and agreement per epoch", acc_series, hlines, y_label="fraction")
    if not (loss or acc):
        return ""
    return (
        f'<section><h2>Training curves</h2><div class="charts">{loss}{acc}</div>'
        f'<p class="note">Curves are measured on the validation slice held out of train (used to pick the '
        f"best epoch{', ' + esc(fmt(report.get('best_epoch'))) if report.get('best_epoch') else ''}); "
        f"the teacher line and the table above are on the eval split.</p>"
        f"{_history_table(history)}</section>"
    )


def bars(report: dict) -> str:
    """File size and CPU (and GPU) latency of teacher and student, as bars."""
    teacher, student = report.get("teacher") or {}, report.get("student") or {}
    sizes = [("teacher", TEACHER, teacher.get("size_bytes")), ("student", STUDENT, student.get("size_bytes"))]
    size = bar_chart("File size", [("size", sizes)], unit="bytes")
    t_lat, s_lat = teacher.get("latency_ms") or {}, student.get("latency_ms") or {}
    groups = [
        (key.replace("_", " "), [("teacher", TEACHER, t_lat.get(key)), ("student", STUDENT, s_lat.get(key))])
        for key in sorted(set(t_lat) | set(s_lat))
    ]
    latency = bar_chart("CPU latency", groups, unit="ms")
    t_gpu, s_gpu = teacher.get("latency_ms_cuda") or {}, student.get("latency_ms_cuda") or {}
    gpu_groups = [
        (key.replace("_", " "), [("teacher", TEACHER, t_gpu.get(key)), ("student", STUDENT, s_gpu.get(key))])
        for key in sorted(set(t_gpu) | set(s_gpu))
    ]
    gpu = bar_chart("GPU latency", gpu_groups, unit="ms")
    if not (size or latency or gpu):
        return ""
    return f'<section><h2>Size and latency</h2><div class="charts">{size}{latency}{gpu}</div></section>'
