"""The student chosen to fit a budget (issue 9, point 3): a latency budget met, a front, an impossible budget."""

from __future__ import annotations

import math

import pytest
import torch

from contract.student_search import check_student_search
from worker.engine import DistillConfig, distill
from worker.engine.errors import EngineError
from worker.engine.student_search import saved_choice
from worker.engine.student_space import LATENCY_MARGIN, measure, pareto_front
from worker.engine.students import build_student


def _latency_64(hidden: list[int]) -> float:
    student = build_student({"architecture": "mlp", "hidden_sizes": hidden}, [64], "float32", 10)
    return measure(student, torch.rand(8, 64), "cpu")[1]["batch_64"]


@pytest.mark.slow
def test_a_latency_budget_returns_a_student_within_it_with_a_front(teacher_path, train_spec, test_spec, tmp_path):
    # The budget lies between a small and a large MLP on this machine, measured here, so that some sizes fit and
    # some do not whatever the machine's speed; sizes timed in tenths of a millisecond, not in timer jitter.
    budget = math.sqrt(_latency_64([64]) * _latency_64([512, 512]))
    search = {"architectures": ["mlp"], "max_latency_ms": {"batch_64": budget}, "trials": 6}
    config = DistillConfig.from_dict({"student": {"search": search}, "epochs": 10, "export": []})
    report = distill(teacher_path, train_spec, test_spec, config, str(tmp_path))

    section = report["student_search"]
    candidates = {c["trial"]: c for c in section["candidates"]}
    chosen = candidates[section["chosen"]]
    over = [c["student"] for c in candidates.values() if not c["fits"]]
    print(f"budget {budget:.4f} ms; chosen {chosen}; front {section['front']}; over the budget {over}")
    assert report["student"]["latency_ms"]["batch_64"] <= budget
    assert section["final_within_budget"] is True
    assert len(section["front"]) >= 3
    assert any(not c["fits"] for c in candidates.values()), "the budget must turn some candidate away"
    for c in candidates.values():
        # Over the budget: measured, never trained; within it: trained and scored.
        assert c["trained"] == c["fits"] == (c["latency_ms"]["batch_64"] <= LATENCY_MARGIN * budget)
        assert (c["validation_metric"] is not None) == c["trained"]
    fitting = [c for c in candidates.values() if c["fits"]]
    assert chosen["validation_metric"] == max(c["validation_metric"] for c in fitting)
    assert set(section["front"]) == pareto_front(fitting, "batch_64")
    assert {t for t, c in candidates.items() if c["on_front"]} == set(section["front"])
    # The student trained in full is the chosen size, for the recipe's whole schedule, not the search's short run.
    assert report["student"]["num_parameters"] == chosen["parameters"]
    assert len(report["history"]) > chosen["epochs"]
    assert report["student"]["accuracy"] >= 0.9 * report["teacher"]["accuracy"]


def test_an_impossible_budget_fails_with_the_smallest_achievable_figures(teacher_path, train_spec, test_spec, tmp_path):
    search = {"architectures": ["mlp"], "max_parameters": 100}
    config = DistillConfig.from_dict({"student": {"search": search}, "epochs": 1, "export": []})
    with pytest.raises(EngineError) as caught:
        distill(teacher_path, train_spec, test_spec, config, str(tmp_path))
    assert caught.value.code == "budget_unreachable"
    # The smallest mlp on 64 features and 10 classes is a linear layer: 64 * 10 + 10 parameters.
    assert "650 parameters" in caught.value.message and "100" in caught.value.message


def test_a_resumed_job_reuses_the_search_choice(teacher_path, train_spec, test_spec, tmp_path):
    search = {"architectures": ["mlp"], "max_parameters": 3000, "trials": 3}
    config = {"student": {"search": search}, "epochs": 2, "export": [], "recipe": "plain"}
    checkpoints = str(tmp_path / "checkpoints")
    first = distill(
        teacher_path,
        train_spec,
        test_spec,
        DistillConfig.from_dict(config),
        str(tmp_path / "a"),
        checkpoint_dir=checkpoints,
    )
    events = []
    again = distill(
        teacher_path,
        train_spec,
        test_spec,
        DistillConfig.from_dict(config),
        str(tmp_path / "b"),
        checkpoint_dir=checkpoints,
        progress=events.append,
    )
    assert any("already chose its student" in e.message for e in events)
    assert not any(e.message.startswith("student candidate") for e in events)
    assert again["student_search"]["chosen"] == first["student_search"]["chosen"]
    # A cancelled job's salvaged weights are described by the chosen spec, not by the search request.
    chosen = {c["trial"]: c for c in first["student_search"]["candidates"]}[first["student_search"]["chosen"]]
    assert saved_choice(checkpoints) == chosen["student"]
    assert saved_choice(str(tmp_path / "nowhere")) is None
    assert all(c["parameters"] <= 3000 for c in first["student_search"]["candidates"] if c["fits"])


def test_the_front_keeps_exactly_the_undominated_candidates():
    def c(trial, metric, latency, parameters):
        return {
            "trial": trial,
            "validation_metric": metric,
            "latency_ms": {"batch_1": latency},
            "parameters": parameters,
        }

    candidates = [
        c(1, 0.90, 1.0, 100),  # on the front
        c(2, 0.80, 1.0, 100),  # dominated by 1
        c(3, 0.95, 2.0, 300),  # more accurate: on the front
        c(4, 0.70, 0.5, 50),  # faster and smaller: on the front
        c(5, 0.90, 1.0, 100),  # ties with 1: neither dominates
        c(6, 0.85, 2.5, 400),  # dominated by 3
    ]
    assert pareto_front(candidates, "batch_1") == {1, 3, 4, 5}


@pytest.mark.parametrize(
    ("search", "words"),
    [
        ({"architectures": []}, "non-empty list"),
        ({"architectures": ["resnet"]}, "non-empty list"),
        ({"architectures": ["mlp"]}, "needs a budget"),
        ({"architectures": ["mlp"], "max_latency_ms": {"batch_8": 1}}, "batch_1"),
        ({"architectures": ["mlp"], "max_latency_ms": {"batch_1": 0}}, "milliseconds"),
        ({"architectures": ["mlp"], "max_parameters": 0}, "max_parameters"),
        ({"architectures": ["mlp"], "max_parameters": 10, "trials": 1}, "trials"),
        ({"architectures": ["mlp"], "max_parameters": 10, "device": "tpu"}, "device"),
        ({"architectures": ["mlp"], "max_parameters": 10, "budget": 3}, "unknown"),
    ],
)
def test_a_search_that_cannot_work_is_refused_saying_what_to_fix(search, words):
    with pytest.raises(ValueError, match=words):
        check_student_search(search)
    assert check_student_search({"architectures": ["mlp", "mlp"], "max_parameters": 10}) == {
        "architectures": ["mlp"],
        "max_parameters": 10,
        "max_latency_ms": None,
        "trials": 8,
        "device": "cpu",
    }
