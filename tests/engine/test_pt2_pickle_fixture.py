"""The hostile .pt2 fixture is real: loading it runs its payload, and it still works as a model.

These are the positive control for the end-to-end tests that show the service's sandbox keeps the
same file's payload from touching the host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest
import torch

from tests.support.pt2_pickle import default_module, pickled_pt2
from worker.engine.teachers import load_teacher, sniff_format


def canary_payload(canary) -> str:
    return f"open({str(canary)!r}, 'w').write('ran')"


@pytest.fixture
def planted(tmp_path):
    canary = tmp_path / "canary"
    path = pickled_pt2(tmp_path / "teacher.pt2", canary_payload(canary))
    assert not canary.exists()  # building the fixture does not run the payload
    return path, canary


def test_torch_export_load_runs_the_payload_and_the_program_still_works(planted):
    path, canary = planted
    program = torch.export.load(path)
    assert canary.read_text() == "ran"
    benign = default_module()
    with torch.no_grad():
        for x in (torch.zeros(2, 4), torch.randn(5, 4)):
            torch.testing.assert_close(program.module()(x), benign(x), rtol=0, atol=0)


def test_the_payload_sits_in_a_pickled_weight_of_a_valid_archive(planted):
    path, _ = planted
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        root = archive.namelist()[0].split("/", 1)[0]
        config = json.loads(archive.read(f"{root}/data/weights/model_weights_config.json"))
    assert config["config"]["weight"]["use_pickle"] is True
    assert config["config"]["bias"]["use_pickle"] is False


def test_the_sniffer_takes_it_for_a_pt2_program_without_running_it(planted):
    path, canary = planted
    assert sniff_format(str(path)) == "pt2"
    assert not canary.exists()


def test_load_teacher_runs_the_payload_and_gives_the_benign_logits(planted):
    path, canary = planted
    teacher = load_teacher(str(path), "cpu")
    assert canary.read_text() == "ran"
    x = torch.randn(7, 4)
    logits = teacher(x)
    assert logits.shape == (7, 3)
    with torch.no_grad():
        torch.testing.assert_close(logits, default_module()(x), rtol=0, atol=0)


def test_the_payload_runs_in_a_python_without_the_test_package(planted, tmp_path):
    # The pickle names only builtins, operator and torch: it fires wherever torch loads it.
    path, canary = planted
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = (
        "import sys, torch; "
        "assert 'tests' not in sys.modules; "
        f"p = torch.export.load({str(path)!r}); "
        "print(p.module()(torch.zeros(2, 4)).shape)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "torch.Size([2, 3])" in result.stdout
    assert canary.read_text() == "ran"


def test_a_given_module_with_tied_weights_keeps_its_outputs(tmp_path):
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.first = torch.nn.Linear(4, 4)
            self.second = torch.nn.Linear(4, 4)
            self.second.weight = self.first.weight  # two names, one storage
            self.head = torch.nn.Linear(4, 3)

        def forward(self, x):
            return self.head(torch.relu(self.second(torch.relu(self.first(x)))))

    torch.manual_seed(1)
    module = Tied().eval()
    canary = tmp_path / "canary"
    path = pickled_pt2(tmp_path / "tied.pt2", canary_payload(canary), module, torch.zeros(3, 4))
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("tied/data/weights/model_weights_config.json"))["config"]
    # The payload got a member of its own: the other name of the tied weight still reads the raw one.
    assert config["first.weight"]["use_pickle"] and not config["second.weight"]["use_pickle"]
    assert config["first.weight"]["path_name"] != config["second.weight"]["path_name"]
    program = torch.export.load(path)
    assert canary.exists()
    x = torch.randn(6, 4)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), module(x), rtol=0, atol=0)
