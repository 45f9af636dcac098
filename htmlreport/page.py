"""The whole report page of a job: one self-contained HTML document (inline CSS and SVG, no scripts)."""

from __future__ import annotations

from collections.abc import Sequence

from htmlreport.latency import latency_notes
from htmlreport.lm import lm_section
from htmlreport.numbers import esc, finite_numbers, fmt
from htmlreport.recipe import recipe_section
from htmlreport.sections import bars, confusion, curves, json_value, kv_table, summary
from htmlreport.student_search import student_search_section

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
table.candidates{font-size:.85rem} table.candidates td.arch{white-space:nowrap}
table.candidates tr.chosen td{font-weight:600;background:#fffbeb} .scroll{overflow-x:auto}
table.candidates td.why{min-width:16em}
"""


def _meta(report: dict, job: dict, job_id: str) -> list[tuple[str, str]]:
    meta = [("job", esc(job_id)), ("status", esc(job.get("status", "")))] if job else [("job", esc(job_id))]
    return meta + [
        ("device", esc(fmt(report.get("device")))),
        ("train seconds", esc(fmt(report.get("train_seconds")))),
        ("eval examples", esc(fmt(report.get("eval_examples")))),
        ("classes", esc(", ".join(map(str, report.get("classes") or [])))),
        ("loss", esc(fmt(report.get("loss")))),
        ("teacher outputs cache", esc(fmt(report.get("teacher_outputs_cache")))),
    ]


def _configuration(job: dict) -> str:
    """The job's inputs and settings, when the job is known."""
    if not job:
        return ""
    config = [
        ("teacher", esc(job.get("teacher_id"))),
        ("train dataset", esc(job.get("train_dataset_id"))),
        ("eval dataset", esc(fmt(job.get("eval_dataset_id") or "seeded 20% of train"))),
        ("student", json_value(job.get("student"))),
        ("export", esc(", ".join(job.get("export") or []))),
        ("baseline", esc(fmt(bool(job.get("baseline"))))),
    ]
    for key, value in sorted((job.get("hyperparameters") or {}).items()):
        config.append((key, json_value(value)))
    return f"<section><h2>Configuration</h2>{kv_table(config)}</section>"


def _artifacts(artifacts: Sequence[dict]) -> str:
    """Name, format, size and sha256 of each artifact, so a download can be checked against the page."""
    if not artifacts:
        return ""
    rows = "".join(
        f"<tr><td>{esc(a.get('name'))}</td><td>{esc(a.get('format'))}</td>"
        f'<td class="num">{esc(fmt(a.get("size_bytes")))}'
        f"</td><td><code>{esc(a.get('sha256'))}</code></td></tr>"
        for a in artifacts
    )
    return (
        f"<section><h2>Artifacts</h2><table><tr><th>name</th><th>format</th><th>bytes</th>"
        f"<th>sha256</th></tr>{rows}</table></section>"
    )


def _headline(report: dict) -> str:
    student, teacher = report.get("student") or {}, report.get("teacher") or {}
    if student.get("accuracy") is None or teacher.get("accuracy") is None:
        return ""
    return (
        f"<p>Student accuracy <b>{fmt(student['accuracy'])}</b> vs teacher "
        f"<b>{fmt(teacher['accuracy'])}</b>, agreement <b>{fmt(student.get('agreement'))}"
        f"</b>, <b>{fmt(report.get('compression_ratio'))}×</b> fewer parameters.</p>"
    )


def render_report_html(report: dict, job: dict | None = None, artifacts: Sequence[dict] = ()) -> str:
    """The report page of a job: summary, curves, recipe, student search, size/latency bars, confusion,
    configuration, checksums."""
    job = job or {}
    report = finite_numbers(report)
    job_id = report.get("job_id") or job.get("id") or ""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Distillery report {esc(job_id)}</title><style>{CSS}</style></head><body><main>"
        f"<h1>Distillation report</h1>{_headline(report)}"
        f"<section><h2>Teacher vs student</h2>{summary(report)}{latency_notes(report)}"
        f"{kv_table(_meta(report, job, job_id))}</section>{lm_section(report)}"
        f"{curves(report)}{recipe_section(report)}{student_search_section(report)}{bars(report)}"
        f"{confusion(report)}{_configuration(job)}{_artifacts(artifacts)}"
        "</main></body></html>"
    )
