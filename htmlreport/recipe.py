"""The report's "Recipe" section: the recipe, the values it chose and why, its search trials, its timings."""

from __future__ import annotations

from typing import Any

from htmlreport.latency import as_dict
from htmlreport.numbers import esc, fmt
from htmlreport.sections import json_value, kv_table

TRIAL_FIELDS = ("trial", "validation_metric", "epochs", "pruned", "seconds")


def _value(value: Any) -> str:
    """A hyperparameter as HTML: floats to 4 significant digits (a learning rate of 3e-05 stays readable)."""
    if isinstance(value, float):
        return esc(f"{value:.4g}")
    return json_value(value)


def _chosen(recipe: dict) -> str:
    """Each chosen value with the recipe's reason for it, then the reasons not tied to one value."""
    chosen, why = as_dict(recipe.get("chosen")), as_dict(recipe.get("why"))
    named = recipe.get("named_by_user")
    named = [str(n) for n in named] if isinstance(named, list) else []
    rows = []
    for key, value in chosen.items():
        reason = why.get(key) or ("set by you" if key in named else "")
        rows.append(f"<tr><th>{esc(key)}</th><td>{_value(value)}</td><td>{esc(reason)}</td></tr>")
    for key, reason in why.items():
        if key not in chosen:
            rows.append(f"<tr><th>{esc(key)}</th><td></td><td>{esc(reason)}</td></tr>")
    if not rows:
        return ""
    return f'<table class="recipe"><tr><th>setting</th><th>value</th><th>why</th></tr>{"".join(rows)}</table>'


def _trials(recipe: dict) -> str:
    """The search trials: the values tried, the validation score, epochs run, pruned or not, seconds."""
    trials = [t for t in recipe.get("trials") or [] if isinstance(t, dict)]
    if not trials:
        return ""
    tried = sorted({k for t in trials for k in t if k not in TRIAL_FIELDS})
    keys = ["trial", *tried, "validation_metric", "epochs", "pruned", "seconds"]
    names = {"validation_metric": "validation score"}
    head = "".join(f"<th>{esc(names.get(k, k.replace('_', ' ')))}</th>" for k in keys)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="num">{_value(t.get(k)) if k in tried else esc(fmt(t.get(k)))}</td>' for k in keys)
        + "</tr>"
        for t in trials
    )
    return (
        f'<h3>Search trials</h3><table class="trials"><tr>{head}</tr>{body}</table>'
        '<p class="note">Validation score: the mean of accuracy and agreement with the teacher on the '
        "validation slice (agreement alone without labels).</p>"
    )


def _timings(recipe: dict) -> list[tuple[str, str]]:
    """Seconds per stage, the budget, and the teacher time the augmented-output cache saved."""
    items = []
    seconds = as_dict(recipe.get("seconds"))
    if seconds:
        items.append(("seconds per stage", esc(", ".join(f"{k} {fmt(v)} s" for k, v in seconds.items()))))
    budget = as_dict(recipe.get("budget"))
    if budget:
        items.append(("budget", esc(", ".join(f"{k.replace('_', ' ')} {fmt(v)}" for k, v in budget.items()))))
    cache = as_dict(recipe.get("augmented_outputs_cache"))
    if cache:
        items.append(("teacher seconds saved by the cache", esc(fmt(cache.get("teacher_seconds_saved")))))
        items.append(
            (
                "augmented-output cache",
                esc(
                    f"{fmt(cache.get('teacher_calls'))} teacher calls ({fmt(cache.get('teacher_seconds'))} s), "
                    f"{fmt(cache.get('cached_batches_reused'))} cached batches reused"
                ),
            )
        )
    return items


def recipe_section(report: dict) -> str:
    """The recipe the job trained with, when the report carries one; nothing for older reports."""
    recipe = as_dict(report.get("recipe"))
    if not recipe:
        return ""
    name = recipe.get("name")
    named = recipe.get("named_by_user")
    items = [("recipe", esc(fmt(name)))]
    if isinstance(named, list) and named:
        items.append(("set by you", esc(", ".join(map(str, named)))))
    items += _timings(recipe)
    return f"<section><h2>Recipe</h2>{kv_table(items)}{_chosen(recipe)}{_trials(recipe)}</section>"
