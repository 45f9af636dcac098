"""The language-model section: teacher, distilled student and SFT baseline on held-out text, the gap recovered,
generation speed, the teacher signal's cost, and the generations side by side."""

from __future__ import annotations

from typing import Any

from htmlreport.numbers import esc, fmt

ROWS = (
    ("held-out perplexity", "perplexity"),
    ("mean NLL (log-perplexity)", "nll"),
    ("top-1 agreement with the teacher", "top1_agreement"),
    ("forward KL to the teacher", "forward_kl"),
    ("reverse KL to the teacher", "reverse_kl"),
    ("parameters", "num_parameters"),
)


def _cell(value: Any) -> str:
    return f'<td class="num">{esc(fmt(value))}</td>'


def _figures(report: dict) -> str:
    teacher, student, baseline = (report.get(n) or {} for n in ("teacher", "student", "baseline"))
    rows = "".join(
        f"<tr><th>{esc(label)}</th>{_cell(teacher.get(key))}{_cell(student.get(key))}{_cell(baseline.get(key))}</tr>"
        for label, key in ROWS
    )
    generations = [(m.get("generations") or {}) for m in (student, baseline)]
    rows += "".join(
        f"<tr><th>{esc(label)} vs the teacher's generations</th><td></td>"
        + "".join(_cell(g.get(key)) for g in generations)
        + "</tr>"
        for label, key in (("ROUGE-L", "rouge_l"), ("exact match", "exact_match"))
    )
    for label, key in (("tokens/s, batch 1", "tokens_per_second_batch_1"), ("tokens/s, batch 32",
                       "tokens_per_second_batch_32"), ("latency p50 ms", "latency_ms_p50"),
                       ("latency p95 ms", "latency_ms_p95")):  # fmt: skip
        t, s = (teacher.get("speed") or {}).get(key), (student.get("speed") or {}).get(key)
        rows += f"<tr><th>{esc(label)}</th>{_cell(t)}{_cell(s)}<td></td></tr>"
    return (
        "<table class='summary'><tr><th></th><th>teacher</th><th>student</th><th>baseline (SFT, no teacher)</th>"
        f"</tr>{rows}</table>"
    )


def _notes(report: dict) -> str:
    gap = report.get("gap_recovered") or {}
    signal = report.get("teacher_signal") or {}
    kl = (report.get("student") or {}).get("kl_buckets")
    notes = [
        f"Method <b>{esc(report.get('method'))}</b>; gap recovered <b>{esc(fmt(gap.get('value')))}</b> on "
        f"{esc(gap.get('on'))}: (student - baseline) / (teacher - baseline).",
        f"Teacher forward passes in this job: {esc(fmt(signal.get('forward_passes')))}, and "
        f"{esc(fmt(signal.get('preflight_forward_passes')))} in the preflight's smoke step; cache hits "
        f"{esc(fmt(signal.get('cache_hits')))}, bytes written {esc(fmt(signal.get('bytes_written')))}, cache size "
        f"{esc(fmt(signal.get('cache_bytes')))}.",
    ]
    on_policy = report.get("on_policy")
    if on_policy:
        notes.append(
            f"On-policy: {esc(fmt(on_policy.get('sampled_batches')))} of the student's batches were its own samples "
            f"scored by the teacher, {esc(fmt(on_policy.get('data_batches')))} the data's completions (lambda "
            f"{esc(fmt(on_policy.get('fraction')))}, after {esc(fmt(on_policy.get('warm_start_epochs')))} "
            "warm-start epochs on the data)."
        )
    if kl:
        notes.append(f"KLs are over the {esc(kl)} buckets: a lower bound of the full-vocabulary KL.")
    return "".join(f'<p class="note">{n}</p>' for n in notes)


def _preflight(report: dict) -> str:
    """What the job checked and stated before its first teacher pass, beside what it then spent."""
    checks = report.get("preflight") or {}
    if not checks:
        return ""
    smoke, memory, fallback = checks.get("smoke") or {}, checks.get("memory") or {}, checks.get("fallback")
    estimate = checks.get("estimate") or {}
    actual = estimate.get("actual") or {}
    fits = "fit" if memory.get("fits") else "do not fit"
    notes = [
        f"Preflight: a smoke step on {esc(fmt(smoke.get('rows')))} rows ran; teacher, student and baseline need "
        f"{esc(fmt(memory.get('needed_bytes')))} bytes ({esc(memory.get('counted'))}) of "
        f"{esc(fmt(memory.get('available_bytes')))} on {esc(memory.get('device'))}: they {fits} together.",
        f"Teacher cost, estimate before the run: signal {esc(fmt(estimate.get('signal_bytes')))} bytes, teacher "
        f"{esc(fmt(estimate.get('teacher_seconds')))} s; actual: {esc(fmt(actual.get('signal_bytes')))} bytes "
        f"written, {esc(fmt(actual.get('teacher_seconds')))} s ({esc(estimate.get('basis'))}).",
    ]
    if fallback:
        notes.append(
            f"<b>{esc(fallback.get('from'))} fell back to {esc(fallback.get('to'))}</b>: {esc(fallback.get('reason'))}."
        )
    return "".join(f'<p class="note">{n}</p>' for n in notes)


def _epochs(report: dict) -> str:
    """Training loss and validation NLL per epoch, of the baseline and the student."""
    history = report.get("lm_history") or {}
    student, baseline = history.get("student") or [], history.get("baseline") or []
    if not student and not baseline:
        return ""

    def cells(n: int) -> str:
        entries = [h[n] if n < len(h) else {} for h in (baseline, student)]
        return "".join(_cell(e.get(k)) for e in entries for k in ("loss", "validation_nll"))

    rows = "".join(f"<tr><th>{n + 1}</th>{cells(n)}</tr>" for n in range(max(len(student), len(baseline))))
    return (
        "<h3>Training, per epoch</h3><table class='summary'><tr><th>epoch</th><th>baseline loss</th>"
        f"<th>baseline validation NLL</th><th>student loss</th><th>student validation NLL</th></tr>{rows}</table>"
    )


def _samples(report: dict) -> str:
    student = ((report.get("student") or {}).get("generations") or {}).get("samples") or []
    baseline = ((report.get("baseline") or {}).get("generations") or {}).get("samples") or []
    if not student:
        return ""
    rows = "".join(
        f"<tr><td>{esc(s.get('prompt'))}</td><td>{esc(s.get('teacher'))}</td><td>{esc(s.get('student'))}</td>"
        f"<td>{esc(b.get('student') if b else '')}</td></tr>"
        for s, b in zip(student, baseline + [{}] * (len(student) - len(baseline)), strict=False)
    )
    return (
        "<h3>Generations on held-out prompts (greedy)</h3><div class='scroll'><table><tr><th>prompt</th>"
        f"<th>teacher</th><th>student</th><th>baseline</th></tr>{rows}</table></div>"
    )


def lm_section(report: dict) -> str:
    """The section for a causal-LM job's report; empty for any other report."""
    if report.get("task") != "causal_lm":
        return ""
    parts = (_figures(report), _notes(report), _preflight(report), _epochs(report), _samples(report))
    return f"<section><h2>Language model</h2>{''.join(parts)}</section>"
