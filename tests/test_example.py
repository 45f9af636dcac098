"""`distillery example` makes data on which distillation visibly matters: the README's Quickstart job, trained
in-process on it, keeps most of a teacher in the 90s at a large compression, and beats its own baseline."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from worker.engine import DatasetSpec, DistillConfig, distill
from worker.examples import write_example

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def quickstart_job() -> dict:
    """The body of POST /v1/jobs in the README's Quickstart, its shell variables left as their names."""
    block = re.search(r"<!-- quickstart -->\s*```bash\n(.*?)```", README, re.S).group(1)
    body = re.search(r'/v1/jobs\b[^\n]* -d "(\{.*?\})"', block, re.S)
    assert body, "the Quickstart submits no job"
    return json.loads(re.sub(r"\$(\w+)", r"\1", body.group(1).replace('\\"', '"')))


@pytest.fixture
def one_thread():
    """Models this small train fastest on one thread, and CI machines are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_quickstart_job_on_the_example_shows_what_distillation_buys(tmp_path, one_thread):
    files = write_example(tmp_path / "example")
    job = quickstart_job()
    assert job["student"] == {"architecture": "mlp", "hidden_sizes": [32]} and job["baseline"] is True, job
    settings = {"student": job["student"], **job["hyperparameters"], "baseline": job["baseline"]}
    config = DistillConfig.from_dict({**settings, "export": ["torchscript"], "device": "cpu"})
    report = distill(
        str(files["teacher"]),
        DatasetSpec(str(files["train"]), "npz"),
        DatasetSpec(str(files["eval"]), "npz"),
        config,
        str(tmp_path / "out"),
    )
    teacher, student, baseline = (report[k]["accuracy"] for k in ("teacher", "student", "baseline"))
    summary = (
        f"teacher {teacher:.3f}, student {student:.3f}, baseline {baseline:.3f}, "
        f"compression {report['compression_ratio']:.1f}x"
    )
    print(summary)
    assert 0.90 <= teacher < 0.985, summary  # a teacher in the 90s: not a problem any model solves
    assert student >= 0.9 * teacher, summary  # the student keeps most of it...
    assert report["compression_ratio"] >= 10, summary  # ...at a large compression
    assert baseline < student, summary  # and the teacher is what made the difference
