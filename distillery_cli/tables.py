"""The CLI's tables: the distillation report, jobs, uploads, and one line per event."""

from __future__ import annotations

import json

from rich.markup import escape
from rich.table import Table

from distillery_cli.output import dump, human_bytes, num, ratio
from distillery_client import Event, Job


def report_table(report: dict) -> Table:
    """Teacher vs student (and the baseline when present): accuracy, agreement, parameters, size, latency."""
    teacher, student = report.get("teacher") or {}, report.get("student") or {}
    baseline = report.get("baseline") or None
    table = Table(title=f"Distillation report {report.get('job_id') or ''}".strip(), title_justify="left")
    table.add_column("")
    table.add_column("teacher", justify="right")
    table.add_column("student", justify="right")
    if baseline:
        table.add_column("baseline (no teacher)", justify="right")

    def row(label: str, t: str, s: str, b: str = "—") -> None:
        table.add_row(label, t, s, *([b] if baseline else []))

    b = baseline or {}
    if report.get("task") == "causal_lm":  # a language model: held-out perplexity and token agreement instead
        row("perplexity", num(teacher.get("perplexity")), num(student.get("perplexity")), num(b.get("perplexity")))
        row("top-1 agreement", "—", num(student.get("top1_agreement")), num(b.get("top1_agreement")))
    row("accuracy", num(teacher.get("accuracy")), num(student.get("accuracy")), num(b.get("accuracy")))
    row("agreement with teacher", "—", num(student.get("agreement")), num(b.get("agreement")))
    row("parameters", num(teacher.get("num_parameters")), num(student.get("num_parameters")))
    row("size", human_bytes(teacher.get("size_bytes")), human_bytes(student.get("size_bytes")))
    t_lat, s_lat = teacher.get("latency_ms") or {}, student.get("latency_ms") or {}
    speedup = report.get("speedup") or {}
    for key in sorted(set(t_lat) | set(s_lat)):
        label = key.replace("_", " ")
        row(f"latency {label} (ms)", num(t_lat.get(key)), num(s_lat.get(key)))
        if speedup.get(key) is not None:
            row(f"speedup {label}", "", ratio(speedup[key]))
    if report.get("compression_ratio") is not None:
        row("compression (parameters)", "", ratio(report["compression_ratio"]))
    table.caption = (
        f"eval examples {num(report.get('eval_examples'))} · device {report.get('device') or '—'} · "
        f"train {num(report.get('train_seconds'), 1)} s"
    )
    return table


def _either(values: dict, name: str, old_name: str):
    """A metric under its name, or under the name it had before (eval_* meant the validation slice)."""
    return values.get(name, values.get(old_name))


def jobs_table(jobs: list[Job]) -> Table:
    """One row per job: id, status, phase, progress, student, accuracy, agreement, created."""
    table = Table()
    for name in ("id", "status", "phase", "progress", "student", "accuracy", "agreement", "created"):
        table.add_column(name, justify="right" if name in ("progress", "accuracy", "agreement") else "left")
    for job in jobs:
        fraction = job.progress.fraction
        spec = dump(job.student) or {}  # a dict, or the contract's StudentSpec model
        arch = spec.get("architecture") or spec.get("model_id") or ""
        metrics = dump(job.metrics) or {}
        table.add_row(
            job.id,
            job.status,
            job.phase or "",
            "" if fraction is None else f"{fraction:.0%}",
            arch,
            num(_either(metrics, "validation_accuracy", "eval_accuracy")),
            num(_either(metrics, "validation_agreement", "eval_agreement")),
            f"{job.created_at:%Y-%m-%d %H:%M:%S}",
        )
    return table


def event_line(event: Event) -> str:
    """'    12 14:03:07 phase     training started {...}' (markup escaped)."""
    data = f" {json.dumps(event.data)}" if event.data else ""
    return f"{event.id:>6} {event.created_at:%H:%M:%S} {event.type:<9} {escape(event.message)}{escape(data)}"


def info_summary(info: dict | None) -> str:
    """An upload's info in a few words: 'npz · input 64 · 10 classes · 1,437 rows'."""
    if not info:
        return ""
    parts = []
    if info.get("format"):
        parts.append(str(info["format"]))
    shape = (info.get("input") or {}).get("shape") if isinstance(info.get("input"), dict) else None
    if isinstance(shape, list):
        parts.append("input " + ("×".join(map(str, shape)) if shape else "scalar"))
    if isinstance(info.get("num_parameters"), int):
        parts.append(f"{info['num_parameters']:,} parameters")
    classes = info.get("num_classes")
    if classes is None and isinstance(info.get("classes"), list):
        classes = len(info["classes"])
    if isinstance(classes, int):
        parts.append(f"{classes} classes")
    if isinstance(info.get("rows"), int):
        parts.append(f"{info['rows']:,} rows")
    return " · ".join(parts)


def _error_message(error) -> str | None:
    """The message of an upload's error, whether the SDK gave it as the contract's ErrorDetail or a dict."""
    if isinstance(error, dict):
        return error.get("message")
    return getattr(error, "message", None)


def uploads_table(rows) -> Table:
    """One row per model or dataset: id, name, format, status, size, created, and its info or error."""
    table = Table()
    for name in ("id", "name", "format", "status", "size", "created", "info / error"):
        table.add_column(name, justify="right" if name == "size" else "left")
    for row in rows:
        note = _error_message(row.error) if row.status == "invalid" else info_summary(row.info)
        table.add_row(
            row.id,
            escape(row.name),
            row.format,
            row.status,
            human_bytes(row.size_bytes),
            f"{row.created_at:%Y-%m-%d %H:%M:%S}",
            escape(str(note or ""))[:80],
        )
    return table
