"""The report page's "Student search" section: the budget, the candidates' scatter with the Pareto front, the
chosen student and the latency budget, the table of every candidate, and no exception on any odd report."""

from __future__ import annotations

import copy
import math
import random
import re
import xml.etree.ElementTree as ET

from htmlreport import render_report_html
from htmlreport.student_search import student_search_section

SVG = "{http://www.w3.org/2000/svg}"


def _candidate(trial, hidden, parameters, b1, b64, accuracy, front, fits=True, why_not=None) -> dict:
    trained = accuracy is not None
    return {
        "trial": trial,
        "student": {"architecture": "mlp", "hidden_sizes": hidden},
        "parameters": parameters,
        "latency_ms": {"batch_1": b1, "batch_64": b64},
        "fits": fits,
        "trained": trained,
        "validation_metric": None if accuracy is None else accuracy - 0.02,
        "validation_accuracy": accuracy,
        "validation_agreement": None if accuracy is None else accuracy - 0.04,
        "epochs": 3 if trained else 0,
        "seconds": 1.25 if trained else 0.01,
        "on_front": front,
        "why_not": why_not,
    }


def _search() -> dict:
    return {
        "budget": {"max_parameters": 50000, "max_latency_ms": {"batch_64": 1.5, "batch_1": 0.2}},
        "target": {"device": "cpu Intel Xeon Gold", "runtime": "torchscript", "threads": 2, "input_shape": [64]},
        "sampler": "Optuna NSGA-II (population 4), constraints: the budget",
        "objective": "validation metric: the mean of validation accuracy and agreement with the teacher",
        "candidates": [
            _candidate(1, [16], 1200, 0.03, 0.2, 0.85, True),
            _candidate(2, [64], 9000, 0.06, 0.9, 0.86, False),
            _candidate(3, [32, 32], 5000, 0.05, 0.5, 0.91, True),
            _candidate(4, [128, 64], 40000, 0.08, 1.2, 0.94, True),
            _candidate(5, [1024, 1024], 900000, 0.4, 3.1, None, False, False, "batch_64 latency 3.1 ms over 1.5 ms"),
        ],
        "front": [1, 3, 4],
        "chosen": 4,
        "seconds": 12.3,
    }


def _svg(section: str) -> ET.Element:
    """The section's chart, parsed as XML (so it is well-formed too)."""
    found = re.search(r"<svg .*?</svg>", section, re.S)
    assert found, "no chart"
    return ET.fromstring(found.group(0))


def _points(svg: ET.Element) -> dict[str, tuple[float, float]]:
    return {
        c.get("data-trial"): (float(c.get("cx")), float(c.get("cy")))
        for c in svg.iter(f"{SVG}circle")
        if "pt" in (c.get("class") or "").split()
    }


def test_no_section_without_a_student_search():
    page = render_report_html({"job_id": "j", "student": {"accuracy": 0.9}})
    assert "Student search" not in page and "student-search" not in page
    assert student_search_section({}) == "" and student_search_section({"student_search": None}) == ""


def test_the_page_places_the_section_after_the_recipe():
    page = render_report_html({"recipe": {"name": "auto"}, "student_search": _search(), "confusion": [[1, 0], [0, 1]]})
    assert page.index("<h2>Recipe</h2>") < page.index("<h2>Student search</h2>") < page.index("on the eval set")


def test_budget_and_target_are_stated():
    section = student_search_section({"student_search": _search()})
    assert "at most 50000 parameters, 1.5000 ms at batch 64, 0.2000 ms at batch 1" in section
    assert "torchscript on cpu Intel Xeon Gold, 2 threads, input [64]" in section
    assert "Trained in full" not in section
    search = {**_search(), "final_latency_ms": {"batch_1": 0.07, "batch_64": 1.7}, "final_within_budget": False}
    section2 = student_search_section({"student_search": search})
    assert "the chosen student measured 0.0700 ms at batch 1, 1.7000 ms at batch 64 (over the budget)" in section2
    assert "Optuna NSGA-II" in section and "5 candidates in 12.3000 s" in section and "trial 4 chosen" in section


def test_one_point_per_trained_candidate_and_the_untrained_on_the_strip():
    svg = _svg(student_search_section({"student_search": _search()}))
    assert svg.get("role") == "img" and "Student search" in svg.get("aria-label")
    points = _points(svg)
    assert sorted(points) == ["1", "2", "3", "4"]
    crosses = [t for t in svg.iter(f"{SVG}text") if t.get("class") == "untrained"]
    assert [t.get("data-trial") for t in crosses] == ["5"]
    # more accurate is higher, slower is to the right
    assert points["4"][1] < points["3"][1] < points["1"][1]
    assert points["1"][0] < points["3"][0] < points["2"][0] < points["4"][0] < float(crosses[0].get("x"))
    tips = {c.get("data-trial"): c.find(f"{SVG}title").text for c in svg.iter(f"{SVG}circle") if c.get("data-trial")}
    assert tips["3"] == "trial 3: mlp, hidden sizes [32, 32], 5000 parameters, 0.5000 ms at batch 64, accuracy 0.9100"


def test_the_front_is_one_line_through_its_points_in_latency_order():
    svg = _svg(student_search_section({"student_search": _search()}))
    lines = [p for p in svg.iter(f"{SVG}polyline") if p.get("class") == "front"]
    assert len(lines) == 1
    vertices = [tuple(map(float, v.split(","))) for v in lines[0].get("points").split()]
    points = _points(svg)
    assert vertices == [points["1"], points["3"], points["4"]]


def test_the_chosen_point_is_ringed_and_labelled():
    section = student_search_section({"student_search": _search()})
    svg = _svg(section)
    rings = [c for c in svg.iter(f"{SVG}circle") if c.get("class") == "chosen"]
    assert len(rings) == 1
    assert (float(rings[0].get("cx")), float(rings[0].get("cy"))) == _points(svg)["4"]
    assert "chosen: trial 4" in section
    assert section.count('<tr class="chosen">') == 1


def _budget_x(svg: ET.Element) -> float:
    lines = [line for line in svg.iter(f"{SVG}line") if line.get("class") == "budget"]
    assert len(lines) == 1 and lines[0].get("x1") == lines[0].get("x2")
    return float(lines[0].get("x1"))


def test_the_budget_line_sits_at_the_budget_on_a_log_axis():
    section = student_search_section({"student_search": _search()})
    svg = _svg(section)
    assert "log scale" in section and "latency at batch 64" in section  # 0.2 to 3.1 ms spans over 10x
    (x1, _), (x4, _) = _points(svg)["1"], _points(svg)["4"]
    expected = x1 + (math.log10(1.5) - math.log10(0.2)) / (math.log10(1.2) - math.log10(0.2)) * (x4 - x1)
    assert abs(_budget_x(svg) - expected) < 0.3
    assert "budget 1.5000 ms" in section


def test_the_budget_line_on_a_linear_axis_at_batch_1():
    search = _search()
    search["budget"]["max_latency_ms"] = {"batch_1": 0.07}
    search["candidates"][4]["latency_ms"]["batch_1"] = 0.09  # 0.03 to 0.09 ms: under 10x, linear
    section = student_search_section({"student_search": search})
    svg = _svg(section)
    assert "log scale" not in section and "latency at batch 1 (ms)" in section
    (x1, _), (x4, _) = _points(svg)["1"], _points(svg)["4"]
    assert abs(_budget_x(svg) - (x1 + (0.07 - 0.03) / (0.08 - 0.03) * (x4 - x1))) < 0.3


def test_no_latency_budget_no_budget_line_and_batch_1_plotted():
    search = _search()
    search["budget"] = {"max_parameters": 50000, "max_latency_ms": None}
    section = student_search_section({"student_search": search})
    assert 'class="budget"' not in section and "latency at batch 1" in section


def test_the_table_has_every_candidate_with_its_columns():
    section = student_search_section({"student_search": _search()})
    table = section[section.index('<table class="candidates">') :]
    assert table.count("<tr") == 6  # the head and 5 candidates
    for head in ("latency batch 1 (ms)", "latency batch 64 (ms)", "validation accuracy", "on front", "why not"):
        assert f"<th>{head}</th>" in table
    assert "mlp, hidden sizes [1024, 1024]" in table and "900000" in table
    assert "batch_64 latency 3.1 ms over 1.5 ms" in table
    assert table.index("mlp, hidden sizes [16]") < table.index("mlp, hidden sizes [1024, 1024]")


def test_odd_strings_are_escaped():
    search = copy.deepcopy(_search())
    search["candidates"][4]["why_not"] = '<script>alert(1)</script> & "quotes"'
    search["candidates"][2]["student"]["architecture"] = "<img src=x onerror=alert(1)>"
    search["candidates"][1]["why_not"] = "'><svg onload=alert(2)>"
    search["target"]["device"] = "<b>cpu</b>"
    page = render_report_html({"student_search": search})
    assert "<script" not in page.lower() and "<img" not in page and "<svg onload" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;quotes&quot;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;, hidden sizes [32, 32]" in page
    assert "&lt;b&gt;cpu&lt;/b&gt;" in page
    _svg(student_search_section({"student_search": search}))  # the chart is still well-formed XML


GARBAGE = [None, "", "x", "1.5", -1, 0, 0.0, -0.5, True, [], [1, "a"], {}, {"a": 1}, 10**400, 1e308, -1e308, 1e-300]


def _garbage_search(rng: random.Random) -> dict:
    def any_value():
        return rng.choice(GARBAGE + [rng.uniform(-2, 5), rng.randint(-3, 10**6)])

    def latency():
        return rng.choice([any_value(), {"batch_1": any_value(), rng.choice(["batch_64", 3]): any_value()}])

    def candidate():
        c = {k: any_value() for k in _candidate(1, [1], 1, 1, 1, 0.5, True)}
        c.update(rng.choice([{}, {"latency_ms": latency(), "validation_accuracy": rng.random()}]))
        c["student"] = rng.choice([any_value(), {"architecture": any_value(), "hidden_sizes": any_value()}])
        return c

    search = {k: any_value() for k in [*_search(), "final_latency_ms", "final_within_budget"]}
    search["budget"] = rng.choice([any_value(), {"max_parameters": any_value(), "max_latency_ms": latency()}])
    search["candidates"] = rng.choice([any_value(), [candidate() for _ in range(rng.randint(0, 6))] + [None, 3]])
    search["front"] = rng.choice([any_value(), [any_value(), 1, 2]])
    return search


def test_garbage_in_every_field_never_raises():
    fixed = [
        {"candidates": "not a list", "budget": "x", "target": 3, "front": "145", "chosen": {"a": 1}},
        {"candidates": [None, 3, "x", {"trial": [1], "latency_ms": "fast", "validation_accuracy": "high"}]},
        {"candidates": [{"latency_ms": {"batch_1": 10**400}, "validation_accuracy": 0.5}]},
        {"candidates": [{"latency_ms": {"batch_1": x}, "validation_accuracy": 0.5} for x in (1e308, -1e308)]},
        {"candidates": [{"latency_ms": {"batch_1": x}, "validation_accuracy": 0.5} for x in (1e-300, 1e300)]},
        {"candidates": [{"latency_ms": {"batch_1": 0.0}, "validation_accuracy": 0.5, "trial": 1}], "chosen": 1},
        {"budget": {"max_latency_ms": {"batch_1": float("nan")}}, "candidates": [{"latency_ms": {"batch_1": 1}}]},
        {"candidates": [{"latency_ms": {"batch_1": 1}, "validation_accuracy": float("inf"), "trial": {}}]},
    ]
    rng = random.Random(7)
    charts = 0
    for search in fixed + [_garbage_search(rng) for _ in range(400)] + ["x", 3, [], True]:
        page = render_report_html({"student_search": search})
        assert page.endswith("</html>")
        section = student_search_section({"student_search": search})
        if "<svg" in section:
            _svg(section)
            charts += 1
    assert charts > 20  # the garbage reached the chart, not only the early returns
    assert student_search_section("not a report") == ""  # type: ignore[arg-type]
