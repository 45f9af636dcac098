"""The visual report: one self-contained HTML page (inline SVG, inline CSS, no scripts, no external assets).

A plain library on the standard library alone, so that the server (GET /v1/jobs/{id}/report.html) and the CLI
can both draw a report without importing each other:

    numbers   the one number format of the page (`fmt`), escaping, NaN-free reports, axis ticks
    charts    SVG line and bar charts
    sections  the page's parts: summary table, curves, size and latency bars, confusion matrix
    latency   what each latency figure was measured with (device, runtime, threads, input shape)
    recipe    the recipe section: chosen values and why, search trials, seconds per stage, cache savings
    student_search  the budget search: candidates' accuracy against latency, the Pareto front, the choice
    page      the whole page (`render_report_html`) and its CSS
"""

from htmlreport.numbers import fmt
from htmlreport.page import render_report_html

__all__ = ["fmt", "render_report_html"]
