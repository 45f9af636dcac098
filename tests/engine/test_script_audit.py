"""worker/engine/script_audit.py: TorchScript archives that read, write or reach out are refused unloaded."""

from __future__ import annotations

import zipfile

import pytest
import torch

from tests.support import digits
from tests.support.hostile import (
    Linear,
    ReadsFile,
    ReadsFileOnLoad,
    StudentThatReadsOnLargeBatches,
    WritesFile,
    save_script,
)
from tests.support.text import make_text_fixture, train_lstm_teacher
from worker.engine import EngineError
from worker.engine.script_audit import ScriptRefused, _audit_source, audit_torchscript
from worker.engine.students import load_uploaded_student
from worker.engine.teachers import inspect_model, load_teacher


class SaysSave(torch.nn.Module):
    """Benign: a method of its own called `save`, and a string that mentions torch.from_file."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)
        self.note = "torch.from_file is not called here"

    def save(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.save(x))


@pytest.mark.parametrize(
    ("module", "words"),
    [
        (ReadsFile("/etc/hostname", 3), "torch.from_file, which reads files"),
        (ReadsFileOnLoad("/etc/hostname", 3), "torch.from_file, which reads files"),
        (StudentThatReadsOnLargeBatches("/etc/hostname", 3), "torch.from_file"),
        (WritesFile("/tmp/out.bin"), "torch.save, which writes files"),
    ],
    ids=["forward-reads", "load-reads", "reads-only-in-training", "writes"],
)
def test_file_operations_are_refused_before_loading(tmp_path, module, words, monkeypatch):
    path = save_script(module, tmp_path / "model.pt")
    loads = []
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: loads.append(a))
    with pytest.raises(ScriptRefused, match="reads files|writes files") as err:
        audit_torchscript(str(path))
    assert words in str(err.value)
    with pytest.raises(EngineError) as engine_err:
        load_teacher(str(path))
    assert engine_err.value.code == "invalid_model" and "refused" in engine_err.value.message
    with pytest.raises(EngineError) as student_err:
        load_uploaded_student(str(path))
    assert student_err.value.code == "invalid_student" and words in student_err.value.message
    assert loads == []  # never handed to torch.jit.load, so its __setstate__ never ran


def test_real_models_pass(tmp_path):
    for path in (
        save_script(Linear(), tmp_path / "linear.pt"),
        save_script(SaysSave(), tmp_path / "says_save.pt"),
        digits.train_digits_teacher(),
    ):
        audit_torchscript(str(path))
        assert inspect_model(str(path))["format"] == "torchscript"
    make_text_fixture(tmp_path / "text", n_train=200, n_eval=50)
    audit_torchscript(str(train_lstm_teacher(tmp_path / "text", epochs=1, embedding_dim=8, hidden_dim=8)))


@pytest.mark.parametrize(
    "source",
    [
        "x = torch . from_file ( p )",  # spacing does not hide a name from the tokenizer
        "x = ops.aten.from_file(p)",
        "torch.ops.aten.save(x, p)",
        "y = ops.c10d.allreduce_(t)",
        "y = ops.symm_mem.nvshmem_get(t)",
        "y = __torch__.torch.classes.c10d.ProcessGroup(t)",
        "x = (torch.\n  from_file(p))",
    ],
)
def test_hand_written_archive_code_is_read_as_tokens(source):
    with pytest.raises(ScriptRefused):
        _audit_source(source, "hand.py")


def test_benign_spellings_pass():
    _audit_source("y = torch.ops.aten.relu(x)\nz = self.save(y)\nw = ops.quantized.add(a, b, 1.0, 0)", "ok.py")


def test_hand_edited_archive_is_refused(tmp_path):
    """An archive whose code was edited after saving (not made by torch.jit.save) is read the same way."""
    good = save_script(Linear(), tmp_path / "good.pt")
    bad = tmp_path / "bad.pt"
    edits = 0
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith(".py") and "/code/" in info.filename:
                edits += data.count(b"torch.linear(")
                data = data.replace(b"torch.linear(", b"torch .from_file(")
            dst.writestr(info.filename, data)  # deflated: the audit reads inflated code, not raw bytes
    assert edits == 1
    assert b"from_file" not in bad.read_bytes()
    with pytest.raises(ScriptRefused, match="from_file"):
        audit_torchscript(str(bad))
