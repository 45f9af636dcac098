"""Uploads that explain themselves: a table's info lists its columns and warns when the labels go by another name.

Through the real API and a real worker (embedded defaults): the description is made in the validation child.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.support.service import Client, running_service
from worker.engine.columns import sample_table
from worker.engine.dataset_hints import dataset_warnings, label_candidate, refusal_hints

pytestmark = pytest.mark.integration


def _write_table(path: Path, header: list[str], rows: list[list]) -> Path:
    path.write_text("\n".join([",".join(header), *(",".join(str(v) for v in row) for row in rows)]) + "\n")
    return path


def _features_and(label_name: str, path: Path, rows: int = 60) -> Path:
    """Two float features and an integer label of three classes, the label column named `label_name`."""
    rng = random.Random(0)
    data = [[round(rng.random(), 3), round(rng.random(), 3), rng.randint(0, 2)] for _ in range(rows)]
    return _write_table(path, ["f1", "f2", label_name], data)


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Client:
    with running_service(tmp_path_factory.mktemp("info")) as svc:
        yield Client(svc.url, svc.new_key("acme"))


def test_a_csv_whose_labels_are_named_target_is_ready_with_a_warning_naming_label_column(client, tmp_path):
    body = client.ready_upload("datasets", _features_and("target", tmp_path / "target.csv"))
    info = body["info"]
    assert info["has_labels"] is False
    assert [w for w in info["warnings"] if "`target`" in w and "label_column=target" in w], info["warnings"]
    assert info["schema"] == [
        {"name": "f1", "kind": "float", "distinct": info["schema"][0]["distinct"]},
        {"name": "f2", "kind": "float", "distinct": info["schema"][1]["distinct"]},
        {"name": "target", "kind": "integer", "distinct": 3},
    ]


def test_a_csv_with_a_label_column_has_no_warning_and_lists_its_columns(client, tmp_path):
    info = client.ready_upload("datasets", _features_and("label", tmp_path / "label.csv"))["info"]
    assert info["has_labels"] is True and info["warnings"] == []
    assert [(c["name"], c["kind"]) for c in info["schema"]] == [("f1", "float"), ("f2", "float"), ("label", "integer")]


def test_a_refused_table_says_which_column_looks_like_labels(client, tmp_path):
    rng = random.Random(1)
    rows = [[round(rng.random(), 3), rng.choice(["setosa", "virginica", "versicolor"])] for _ in range(40)]
    resp = client.upload("datasets", _write_table(tmp_path / "iris.csv", ["width", "species"], rows))
    assert resp.status_code == 201, resp.text
    body = client.wait_upload("datasets", resp.json()["id"])
    assert body["status"] == "invalid" and "label_column=species" in body["error"]["message"], body


def test_a_refused_jsonl_names_the_columns_that_look_like_text_and_labels(client, tmp_path):
    """Refused (no `text` column, no tokenizer): the message names the text-like and the label-like columns."""
    rng = random.Random(2)
    lines = [
        {"review": "this film was " + rng.choice(["a joy from start to end", "long and dull"]), "mood": m}
        for m in rng.choices(["pos", "neg"], k=30)
    ]
    path = tmp_path / "reviews.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    resp = client.upload("datasets", path)
    body = client.wait_upload("datasets", resp.json()["id"])
    assert body["status"] == "invalid", body
    assert "text_column=review" in body["error"]["message"] and "label_column=mood" in body["error"]["message"]


def test_an_npz_has_no_schema_and_no_warnings(client, tmp_path):
    import numpy as np

    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((8, 3), dtype=np.float32), y=np.arange(8) % 2)
    info = client.ready_upload("datasets", path)["info"]
    assert info["warnings"] == [] and "schema" not in info


# Unit tests of the heuristics (no service): they decide what the warnings above say.


def test_many_integer_columns_of_few_values_are_no_guess(tmp_path):
    """A table of pixel intensities (every column 0..16) has no label column to suggest."""
    rng = random.Random(3)
    rows = [[rng.randint(0, 16) for _ in range(6)] for _ in range(50)]
    sample = sample_table(str(_write_table(tmp_path / "px.csv", [f"p{i}" for i in range(6)], rows)), "csv")
    assert label_candidate(sample, set()) is None


def test_a_label_named_otherwise_is_found_by_name_without_case():
    from worker.engine.columns import ColumnSummary, TableSample

    sample = TableSample([ColumnSummary("x"), ColumnSummary("Class")], rows=10)
    assert label_candidate(sample, set()) == "Class"


def test_a_row_number_column_is_a_warning(tmp_path):
    rng = random.Random(4)
    rows = [[i, round(rng.random(), 3), rng.randint(0, 1)] for i in range(30)]
    sample = sample_table(str(_write_table(tmp_path / "idx.csv", ["Unnamed: 0", "f", "label"], rows)), "csv")
    warnings = dataset_warnings(sample, {"has_labels": True}, None, None)
    assert len(warnings) == 1 and "`Unnamed: 0`" in warnings[0] and "index=False" in warnings[0]


def test_refusal_hints_say_nothing_when_nothing_looks_like_labels(tmp_path):
    rows = [[i * 0.5, i * 0.25] for i in range(30)]
    sample = sample_table(str(_write_table(tmp_path / "f.csv", ["a", "b"], rows)), "csv")
    assert refusal_hints(sample, None, None) == []


def test_the_sample_stops_at_a_line_too_long_to_read(tmp_path, monkeypatch):
    """A refused file may be one enormous line: the description reads a bounded amount, never the whole line."""
    import worker.engine.columns as columns

    monkeypatch.setattr(columns, "MAX_LINE_CHARS", 64)
    path = tmp_path / "long.jsonl"
    path.write_text('{"text": "short", "label": 1}\n' + '{"text": "' + "x" * 1000 + '", "label": 0}\n')
    sample = sample_table(str(path), "jsonl")
    assert sample.rows == 1 and [c.name for c in sample.columns] == ["text", "label"]
