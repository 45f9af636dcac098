"""A student chosen to fit a budget: Optuna's NSGA-II over candidate sizes, each measured, then trained briefly.

Objectives: the validation metric (worker/engine/search.py's trial_metric) up, latency at the budget's batch size
down, parameters down; the budget is the sampler's constraint, so later generations draw near what fits. A
candidate over the budget is pruned before training (measuring it takes milliseconds); the rest train for the
recipe's trial epochs from the same seed, through the same augmented-output cache as every other run of the job.
The most accurate candidate that fits is then trained in full by the usual recipe; the report lists every
candidate and the Pareto front among those that fit.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable

import torch

from contract.student_search import check_student_search
from worker.engine.atomic import read_saved, save_json
from worker.engine.config import ProgressEvent
from worker.engine.errors import EngineError
from worker.engine.search import trial_metric
from worker.engine.student_space import (
    SMALLEST,
    latency_words,
    measure,
    measured_on,
    over_budget,
    pareto_front,
    sample_candidate,
    spec_words,
    target_device,
)

logger = logging.getLogger(__name__)

# Draws per trained candidate at most: a tight budget rejects many sizes, a narrow space repeats them.
MAX_DRAWS_PER_TRIAL = 20
CHOICE_FILE = "student_search.json"  # the search's choice, in the checkpoint folder (resume, salvage)


@dataclasses.dataclass
class SearchSetup:
    """What the search needs from the job: the request, how to build and train a candidate, an example batch."""

    request: dict
    build: Callable[[dict], torch.nn.Module]  # a fresh candidate from its spec, seeded, on the training device
    train: Callable[[torch.nn.Module, Callable[[ProgressEvent], None]], None]  # a short run, metrics to the hook
    example: torch.Tensor  # a few training rows on the CPU
    train_device: str
    trial_epochs: int
    seed: int
    max_student_parameters: int | None = None


def choose_student(setup: SearchSetup, emit, checkpoint_dir: str | None) -> tuple[dict, dict]:
    """(the chosen student's spec, the report's `student_search` section); EngineError when nothing can fit."""
    request = check_request(setup.request)
    budget = {**request, "max_parameters": _parameter_cap(request, setup.max_student_parameters)}
    saved = _read(checkpoint_dir, request)
    if saved is not None:
        emit(ProgressEvent("info", "resuming: the student search already chose its student", {}))
        return saved["chosen_spec"], saved["section"]
    device = target_device(request["device"], setup.train_device)
    started = time.monotonic()
    fitting = _smallest_that_fit(setup, budget, device)
    emit(
        ProgressEvent(
            "info", f"student search: {request['trials']} candidates of {request['architectures']} trained", {}
        )
    )
    candidates = _run_study(setup, budget, device, fitting, emit)
    trained = [c for c in candidates if c["trained"] and c["validation_metric"] is not None]
    if not trained:
        raise EngineError("non_finite", "no candidate of the student search produced a validation metric")
    chosen = max(trained, key=lambda c: (c["validation_metric"], -c["parameters"]))
    front = pareto_front(trained, _latency_key(request))
    for c in candidates:
        c["on_front"] = c["trial"] in front
    section = {
        "budget": {"max_parameters": request["max_parameters"], "max_latency_ms": request["max_latency_ms"]},
        "target": measured_on(device, setup.example),
        "sampler": f"Optuna NSGA-II (population {_population(request['trials'])}), the budget as its constraint",
        "objective": "validation metric: the mean of validation accuracy and agreement with the teacher",
        "candidates": candidates,
        "front": sorted(front),
        "chosen": chosen["trial"],
        "seconds": round(time.monotonic() - started, 3),
    }
    emit(ProgressEvent("info", f"student search chose trial {chosen['trial']}: {_show(chosen)}", {"chosen": chosen}))
    _write(checkpoint_dir, request, chosen["student"], section)
    return chosen["student"], section


def search_for_job(prep, plan, base, emit, limits: tuple) -> tuple:
    """The budget search inside distill(): (the config with the chosen student, the report's section).

    `base` is the job's RunInputs (splits, teacher, augmented-output cache); candidates share all of it.
    """
    from worker.engine.students import build_student
    from worker.engine.training_runs import student_factory, train_briefly

    checkpoint_dir, max_student_parameters = limits
    config = plan.config
    shape, dtype = prep.train.input_shape, str(prep.train.x.dtype)
    epochs = plan.trial_epochs or max(1, config.epochs // 5)

    def build(spec: dict) -> torch.nn.Module:
        make = lambda: build_student(spec, shape, dtype, prep.num_classes, prep.vocab_size, prep.pad_id)  # noqa: E731
        return student_factory(make, config.seed, base.device)()

    def train(model, progress) -> None:
        short = dataclasses.replace(config, epochs=epochs)
        train_briefly(base, model, short, short.alpha if base.labeled else 1.0, progress)

    example = torch.from_numpy(prep.train.x[prep.train_index[:8]])
    setup = SearchSetup(
        config.student["search"], build, train, example, base.device, epochs, config.seed, max_student_parameters
    )
    spec, section = choose_student(setup, emit, checkpoint_dir)
    return dataclasses.replace(config, student=spec), section


def final_check(section: dict, report: dict, emit) -> dict:
    """The section with the trained student's own latency (timed again in evaluation) checked against the budget."""
    student = report.get("student") or {}
    cuda = section["target"]["device"].startswith("cuda")
    measured = student.get("latency_ms_cuda" if cuda else "latency_ms") or {}
    over = {
        key: {"measured_ms": measured.get(key), "budget_ms": limit}
        for key, limit in (section["budget"].get("max_latency_ms") or {}).items()
        if measured.get(key) is not None and measured[key] > limit
    }
    section["final_latency_ms"] = measured
    section["final_within_budget"] = not over
    if over:
        emit(ProgressEvent("warning", f"the trained student measured over the latency budget: {over}", over))
    return section


def check_request(search: object) -> dict:
    """The search request with defaults filled in; EngineError("invalid_student") when it cannot work."""
    try:
        return check_student_search(search)
    except ValueError as exc:
        raise EngineError("invalid_student", str(exc)) from None


def _parameter_cap(request: dict, server_cap: int | None) -> int | None:
    caps = [c for c in (request["max_parameters"], server_cap) if c is not None]
    return min(caps) if caps else None


def _smallest_that_fit(setup: SearchSetup, budget: dict, device: str) -> list[dict]:
    """The smallest candidate of each architecture that fits; a budget none of them meets fails the job."""
    measured = []
    for architecture in budget["architectures"]:
        spec = SMALLEST[architecture]
        parameters, latency = measure(setup.build(spec), setup.example, device, budget["max_parameters"])
        measured.append((spec, parameters, latency, over_budget(parameters, latency, budget)))
    fitting = [spec for spec, _, _, why in measured if why is None]
    if fitting:
        return fitting
    figures = "; ".join(
        f"{spec_words(spec)}: {parameters:,} parameters, " + latency_words(latency) + f" ({why})"
        for spec, parameters, latency, why in measured
    )
    raise EngineError(
        "budget_unreachable",
        f"no student of {budget['architectures']} can fit this budget on {device}; the smallest achievable: "
        f"{figures}. Raise the budget or allow another architecture.",
    )


def _population(trials: int) -> int:
    return max(2, min(8, trials // 3))


def _run_study(setup: SearchSetup, budget: dict, device: str, fitting: list[dict], emit) -> list[dict]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # The budget is each trial's constraint (Trial.set_constraint): NSGA-II ranks feasible trials first.
    sampler = optuna.samplers.NSGAIISampler(population_size=_population(budget["trials"]), seed=setup.seed)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"], sampler=sampler)
    key = _latency_key(budget)
    candidates: list[dict] = []
    records: dict[str, dict] = {}
    for spec in fitting:  # the smallest that fit come first; their sizes lie outside the sampler's space
        records[json.dumps(spec, sort_keys=True)] = _add(candidates, _candidate(setup, spec, budget, device), emit)
    draws = 0
    # `trials` counts the candidates trained (the cost); one over the budget costs a measurement, so draws go on.
    while _trained(candidates) < budget["trials"] and draws < MAX_DRAWS_PER_TRIAL * budget["trials"]:
        draws += 1
        trial = study.ask()
        spec = sample_candidate(trial, budget["architectures"])
        name = json.dumps(spec, sort_keys=True)
        # A size drawn again is told its figures again (the sampler learns) but is not a new candidate.
        record = records.get(name) or _add(candidates, _candidate(setup, spec, budget, device), emit)
        records[name] = record
        trial.set_constraint("budget", 0.0 if record["fits"] else 1.0)
        metric = record["validation_metric"] if record["validation_metric"] is not None else 0.0
        latency = record["latency_ms"][key]
        study.tell(trial, [metric, math.inf if latency is None else latency, float(record["parameters"])])
    return candidates


def _trained(candidates: list[dict]) -> int:
    return sum(1 for c in candidates if c["trained"])


def _add(candidates: list[dict], record: dict, emit) -> dict:
    record["trial"] = len(candidates) + 1
    candidates.append(record)
    emit(ProgressEvent("info", f"student candidate {record['trial']}: {_show(record)}", {"candidate": record}))
    return record


def _candidate(setup: SearchSetup, spec: dict, budget: dict, device: str) -> dict:
    """Measure one candidate; train it briefly when it fits. Its record for the report."""
    started = time.monotonic()
    student = setup.build(spec)
    parameters, latency = measure(student, setup.example, device, budget["max_parameters"])
    why_not = over_budget(parameters, latency, budget)
    best: dict = {}
    epochs = 0
    if why_not is None:
        rows: list[dict] = []
        setup.train(setup.build(spec), lambda event: rows.append(event.data) if event.type == "metrics" else None)
        scored = [r for r in rows if trial_metric(r) is not None]
        best = max(scored, key=lambda r: trial_metric(r) or 0.0) if scored else {}
        epochs = len(rows)
    return {
        "student": spec,
        "parameters": parameters,
        "latency_ms": latency,
        "fits": why_not is None,
        "trained": why_not is None,
        "validation_metric": trial_metric(best) if best else None,
        "validation_accuracy": best.get("validation_accuracy"),
        "validation_agreement": best.get("validation_agreement"),
        "epochs": epochs,
        "seconds": round(time.monotonic() - started, 3),
        "why_not": why_not,
        "on_front": False,
    }


def _latency_key(budget: dict) -> str:
    return next(iter(budget.get("max_latency_ms") or {}), "batch_1")


def _show(c: dict) -> str:
    metric = "not trained" if c["validation_metric"] is None else f"validation {c['validation_metric']:.4f}"
    latency = latency_words(c["latency_ms"])
    ending = f" ({c['why_not']})" if c["why_not"] else ""
    return f"{spec_words(c['student'])}: {c['parameters']:,} parameters, {latency}, {metric}{ending}"


def _read(checkpoint_dir: str | None, request: dict) -> dict | None:
    saved = read_saved(checkpoint_dir, CHOICE_FILE)
    return saved if saved is not None and saved.get("request") == request else None


def saved_choice(checkpoint_dir: str | None) -> dict | None:
    """The student spec a (stopped) job's search chose, from its checkpoint folder; None before it chose."""
    spec = (read_saved(checkpoint_dir, CHOICE_FILE) or {}).get("chosen_spec")
    return spec if isinstance(spec, dict) else None


def _write(checkpoint_dir: str | None, request: dict, spec: dict, section: dict) -> None:
    save_json(checkpoint_dir, CHOICE_FILE, {"request": request, "chosen_spec": spec, "section": section})
