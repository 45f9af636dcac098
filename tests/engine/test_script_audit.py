"""worker/engine/script_audit.py: TorchScript archives that read, write or reach out are refused unloaded."""

from __future__ import annotations

import re
import warnings
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
    flatbuffer_behind_zip,
    rewrite_archive,
    save_script,
)
from tests.support.text import make_text_fixture, train_lstm_teacher
from worker.engine import EngineError
from worker.engine.script_audit import ScriptRefused, _audit_source, audit_torchscript
from worker.engine.students import load_uploaded_student
from worker.engine.teachers import inspect_model, load_teacher, sniff_format


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
        # Names in strings and spellings that are no attribute chain (each compiles in an archive's code).
        'x = getattr(torch, "from_file")(p)',
        'x = getattr(torch, "from_" "file")(p)',  # adjacent literals are one string
        'x = getattr(getattr(ops, "aten"), "from_file")(p)',
        'y = getattr(ops, "c10d").allreduce_(t)',
        "(torch).save(x, p)",
        "torch.autograd.save(x, p)",  # torch.autograd is the aten namespace again
        "t = torch\nt.save(x, p)",  # a namespace held in a variable
        "a = ops.aten\nx = a.from_file(p)",
        "c = __torch__.torch\ny = c.classes.c10d.ProcessGroup(t)",
        "x = getattr(torch, name)(p)",  # a name torch cannot see at compile time is not one we can see either
        'def f(g: "torch.classes.c10d.ProcessGroup") -> int:\n  return 0',  # a type named by a string
        'n = "aten::from_file"',
        'n = "c10d::allreduce_"',
        'n = "save"',
        'x = f"{torch.save(y, p)}"',
        "def f(x):\n  # type: (torch.classes.c10d.Work) -> Tensor\n  return x",  # TorchScript reads type comments
        "fut = ops.prim.rpc_async(to, f, (x,))",  # the prim namespace is allowed, its remote calls are not
        'n = "prim::rpc_sync"',
    ],
)
def test_hand_written_archive_code_is_read_as_a_syntax_tree(source):
    with pytest.raises(ScriptRefused):
        _audit_source(source, "hand.py")


def test_benign_spellings_pass():
    _audit_source("y = torch.ops.aten.relu(x)\nz = self.save(y)\nw = ops.quantized.add(a, b, 1.0, 0)", "ok.py")
    _audit_source(
        'layer = getattr(self.layers, "0")\n'
        "sub = self.sub\nz = (sub).save(y)\n"
        'ops.prim.RaiseException("bad dims", "builtins.RuntimeError")\n'
        "obj = __torch__.Helper.__new__(__torch__.Helper)\n"  # a class scripted in __main__
        "w = torch.autograd.grad([y], [x])\n"
        "def f(self: __torch__.torch.nn.modules.linear.Linear, x: Tensor) -> Tensor:\n  return x\n",
        "ok.py",
    )


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


AUDITED = "this TorchScript model is refused"


def _assert_refused(path, words: str, sniffed: str = AUDITED) -> None:
    """Refused by the audit, and by sniff_format (what every load goes through) as an invalid model."""
    with pytest.raises(ScriptRefused, match=words):
        audit_torchscript(str(path))
    with pytest.raises(EngineError) as err:
        sniff_format(str(path))
    assert err.value.code == "invalid_model" and sniffed in err.value.message
    if sniffed == AUDITED:
        assert re.search(words, err.value.message)


def _secret(tmp_path) -> tuple[str, list[float]]:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"s3cr")
    return str(secret), [float(b) for b in b"s3cr"]


def _loaded_forward(path, x: torch.Tensor) -> list:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path))(x).tolist()


@pytest.mark.parametrize(
    ("rename", "words", "sniffed"),
    [
        (lambda n: n.replace(".py", ".PY"), "from_file", AUDITED),  # code/__torch__/tests/support/hostile.PY
        (lambda n: n.replace("/code/", "/CODE/"), "from_file", AUDITED),
        (lambda n: n.replace("model/code/", "MODEL/code/"), "cannot read it as an archive", AUDITED),
    ],
    ids=["PY", "CODE", "MODEL"],
)
def test_code_members_are_found_as_torch_finds_them(tmp_path, rename, words, sniffed):
    """torch's reader looks members up case-insensitively (miniz, flags 0), so a renamed member still loads."""
    secret, secret_bytes = _secret(tmp_path)
    saved = save_script(ReadsFile(secret, 4), tmp_path / "model.pt")
    path = rewrite_archive(saved, tmp_path / "renamed.pt", rename=rename)
    assert "model/code/__torch__/tests/support/hostile.py" not in zipfile.ZipFile(path).namelist()
    assert _loaded_forward(path, torch.zeros(1, 2)) == [secret_bytes]  # torch still compiles and runs it
    _assert_refused(path, words, sniffed)


@pytest.mark.parametrize("twin", ["hostile.py", "HOSTILE.py"])
def test_members_torch_takes_for_one_are_refused(tmp_path, twin):
    """Of two members with one name (in any case), torch loads whichever its binary search meets."""
    secret, secret_bytes = _secret(tmp_path)
    saved = save_script(ReadsFile(secret, 4), tmp_path / "model.pt")
    code = "model/code/__torch__/tests/support/hostile.py"
    hostile = zipfile.ZipFile(saved).read(code)
    benign = hostile.replace(b"torch.from_file(path, None, size, dtype=0)", b"torch.zeros([size], dtype=0)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate name it writes
        path = rewrite_archive(
            saved,
            tmp_path / "twins.pt",
            edit=lambda n, d: benign if n == code else d,
            extra=[(code.replace("hostile.py", twin), hostile)],
        )
    assert _loaded_forward(path, torch.zeros(1, 2)) in ([[0.0] * 4], [secret_bytes])  # it loads one of the two
    _assert_refused(path, "which torch takes for the same member")


def _reads(tmp_path):
    secret, secret_bytes = _secret(tmp_path)
    return ReadsFile(secret, 4), b"torch.from_file(", torch.zeros(1, 2), lambda out: out == [secret_bytes]


def _writes(tmp_path):
    target = tmp_path / "written.bin"
    return WritesFile(str(target)), b"torch.save(", torch.zeros(1, 4), lambda out: target.exists()


@pytest.mark.parametrize(
    ("hostile", "spelling", "words"),
    [
        (_reads, b'getattr(torch, "from_file")(', "from_file"),
        (_reads, b'getattr(torch, "from_" "file")(', "from_file"),
        (_reads, b'getattr(ops.aten, "from_file")(', "from_file"),
        (_reads, b"(torch).from_file(", "from_file"),
        (_reads, b"torch.autograd.from_file(", "from_file"),
        (_writes, b'getattr(torch, "save")(', "torch.save, which writes files"),
        (_writes, b"(torch).save(", "torch.save, which writes files"),
        (_writes, b"torch.autograd.save(", "torch.autograd.save, which writes files"),
        (_writes, (b"    torch.save(", b"    t = torch\n    t.save("), "namespace torch as a value"),
    ],
    ids=[
        "getattr",
        "getattr-concatenated",
        "getattr-ops",
        "parenthesised",
        "autograd",
        "save-getattr",
        "save-parenthesised",
        "save-autograd",
        "save-alias",
    ],
)
def test_calls_spelled_without_their_name_are_refused(tmp_path, hostile, spelling, words):
    """torch.jit.save prints the call by name; an edited archive spells it otherwise, and torch compiles that."""
    module, call, x, did_it = hostile(tmp_path)
    saved = save_script(module, tmp_path / "model.pt")
    old, new = spelling if isinstance(spelling, tuple) else (call, spelling)  # a tuple edits a whole line
    edits = []

    def edit(name, data):
        edits.append(data.count(old) if name.endswith(".py") else 0)
        return data.replace(old, new) if name.endswith(".py") else data

    path = rewrite_archive(saved, tmp_path / "spelled.pt", edit=edit)
    assert sum(edits) == 1
    assert did_it(_loaded_forward(path, x))  # the edited code compiles and does what it says
    _assert_refused(path, words)


def test_a_flatbuffer_behind_a_zip_is_refused(tmp_path):
    """torch.jit.load runs a file whose bytes 4-8 are b"PTMF" as a flatbuffer module, whatever zip it also is."""
    secret, secret_bytes = _secret(tmp_path)
    benign = save_script(Linear(), tmp_path / "benign.pt")
    path = flatbuffer_behind_zip(benign, ReadsFile(secret, 4), tmp_path / "two-in-one.pt")
    with zipfile.ZipFile(path) as archive:  # what the audit read before: the benign archive
        assert any(n.endswith("/code/__torch__/tests/support/hostile.py") for n in archive.namelist())
    assert _loaded_forward(path, torch.zeros(1, 4)) == [secret_bytes]
    _assert_refused(path, "flatbuffer")


def test_a_custom_class_named_only_by_a_pickle_is_refused(tmp_path):
    """data.pkl builds the objects torch.jit.load hands to __setstate__, custom C++ classes included: the
    loader types a quantized Linear's `_packed_params : Tensor` as one, so the code need not name it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(Linear()), {torch.nn.Linear})
    saved = save_script(quantized, tmp_path / "quantized.pt")
    annotation = b"_packed_params : __torch__.torch.classes.quantized.LinearPackedParamsBase"
    path = rewrite_archive(
        saved, tmp_path / "unnamed.pt", edit=lambda n, d: d.replace(annotation, b"_packed_params : Tensor")
    )
    with zipfile.ZipFile(path) as archive:
        assert not any(b"torch.classes" in archive.read(n) for n in archive.namelist() if n.endswith(".py"))
    assert len(_loaded_forward(path, torch.ones(1, 4))[0]) == 3
    _assert_refused(path, r"pickle data\.pkl builds a custom C\+\+ class")


@pytest.mark.parametrize(
    ("member", "words"),
    [
        ("model/model.json", "model.json"),  # the legacy format, which compiled code named in it
        ("model/code/__torch__/notes.txt", "not TorchScript source"),
        ("model/attributes.pkl", "attributes.pkl"),
    ],
)
def test_members_outside_the_layout_are_refused(tmp_path, member, words):
    saved = save_script(Linear(), tmp_path / "model.pt")
    _assert_refused(rewrite_archive(saved, tmp_path / "extra.pt", extra=[(member, b"{}")]), words)
