"""Text datasets (tokenising, padding, labels, errors) and text students (build, trace, ONNX)."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from worker.engine.text import TextDatasetError, lengths, load_text_table, pad_id_of, text_info
from worker.engine.text_students import build_text_student, resolve_text_student

VOCAB = {"[PAD]": 0, "[UNK]": 1, "hello": 2, "world": 3, "foo": 4}


def _tokenizer(path: Path, vocab=None, padding: int | None = None) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel(vocab=vocab or VOCAB, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if padding is not None:
        tok.enable_padding(pad_id=padding, pad_token="foo")
    tok.save(str(path))
    return path


def _spec(path, fmt="csv", **kw) -> SimpleNamespace:
    base = dict(label_column=None, text_column=None, tokenizer_path=None, max_length=None, classes=None)
    return SimpleNamespace(path=str(path), format=fmt, **{**base, **kw})


def _csv(tmp_path: Path, text: str, name="d.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.fixture
def tok(tmp_path):
    return str(_tokenizer(tmp_path / "tokenizer.json"))


def test_tokenise_pad_truncate(tmp_path, tok):
    p = _csv(tmp_path, "text,label\nhello world,b\nfoo bar hello world foo,a\n,a\n")
    x, y, classes = load_text_table(_spec(p, tokenizer_path=tok, max_length=4))
    assert x.dtype == np.int64 and x.shape == (3, 4)
    assert x.tolist() == [[2, 3, 0, 0], [4, 1, 2, 3], [0, 0, 0, 0]]
    assert classes == ["a", "b"] and y.tolist() == [1, 0, 0]
    assert lengths(x, 0).tolist() == [2, 4, 0]
    x, _, _ = load_text_table(_spec(p, tokenizer_path=tok))
    assert x.shape == (3, 128)


def test_special_tokens_survive_truncation(tmp_path):
    from tokenizers import Tokenizer
    from tokenizers.processors import TemplateProcessing

    vocab = {**VOCAB, "[CLS]": 5, "[SEP]": 6}
    path = _tokenizer(tmp_path / "t.json", vocab=vocab)
    tok = Tokenizer.from_file(str(path))
    specials = [("[CLS]", 5), ("[SEP]", 6)]
    tok.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=specials)
    tok.enable_truncation(2)  # the loader replaces the file's own truncation and padding
    tok.enable_padding(pad_id=0, pad_token="[PAD]", length=40)
    tok.save(str(path))
    p = _csv(tmp_path, "text\nhello world foo\nfoo\n")
    x, _, _ = load_text_table(_spec(p, tokenizer_path=str(path), max_length=4))
    assert x.tolist() == [[5, 2, 3, 6], [5, 4, 6, 0]]
    x, _, _ = load_text_table(_spec(p, tokenizer_path=str(path), max_length=1))
    assert x.tolist() == [[5], [5]]  # shorter than the special tokens: cut, not an error


def test_pad_id_rules(tmp_path):
    assert pad_id_of(str(_tokenizer(tmp_path / "a.json", padding=4))) == 4
    assert pad_id_of(str(_tokenizer(tmp_path / "b.json", vocab={"<unk>": 0, "<pad>": 1, "hi": 2}))) == 1
    assert pad_id_of(str(_tokenizer(tmp_path / "c.json", vocab={"[UNK]": 0, "hi": 1}))) == 0
    assert pad_id_of(None) == 0
    p = _csv(tmp_path, "text\nhello\n")
    x, y, classes = load_text_table(_spec(p, tokenizer_path=str(tmp_path / "a.json"), max_length=3))
    assert x.tolist() == [[2, 4, 4]] and y is None and classes is None


def test_string_labels_follow_classes(tmp_path, tok):
    p = _csv(tmp_path, "text,label\nhello,neg\nworld,pos\nfoo,neutral\n")
    _, y, classes = load_text_table(_spec(p, tokenizer_path=tok))
    assert classes == ["neg", "neutral", "pos"] and y.tolist() == [0, 2, 1]
    _, y, classes = load_text_table(_spec(p, tokenizer_path=tok, classes=["pos", "neutral", "neg"]))
    assert classes == ["pos", "neutral", "neg"] and y.tolist() == [2, 0, 1]
    with pytest.raises(TextDatasetError, match="'neutral'"):
        load_text_table(_spec(p, tokenizer_path=tok, classes=["pos", "neg"]))


def test_integer_labels_keep_values(tmp_path, tok):
    p = _csv(tmp_path, "text,y\nhello,2\nworld,0.0\n")
    _, y, classes = load_text_table(_spec(p, tokenizer_path=tok, label_column="y"))
    assert y.tolist() == [2, 0] and classes == ["0", "1", "2"]
    _, _, classes = load_text_table(_spec(p, tokenizer_path=tok, label_column="y", classes=["a", "b", "c"]))
    assert classes == ["a", "b", "c"]


def test_labels_missing(tmp_path, tok):
    p = _csv(tmp_path, "text,target\nhello,1\n")
    x, y, classes = load_text_table(_spec(p, tokenizer_path=tok))
    assert y is None and classes is None
    _, y, classes = load_text_table(_spec(p, tokenizer_path=tok, classes=["a", "b"]))
    assert y is None and classes == ["a", "b"]
    with pytest.raises(TextDatasetError, match=r"'label'.*\['text', 'target'\]"):
        load_text_table(_spec(p, tokenizer_path=tok, label_column="label"))


@pytest.mark.parametrize(
    "content,kw,match",
    [
        ("body,label\nhi,a\n", {}, r"text column 'text' not found.*\['body', 'label'\]"),
        ("text,label\nhi,a\n", {"text_column": "body"}, r"'body' not found"),
        ("text,label\nhi,a\n", {"tokenizer_path": None}, "tokenizer"),
        ("", {}, "empty"),
        ("text,label\n", {}, "no rows"),
        ("text,label\nhi,a,extra\n", {}, "3 fields"),
        ("text,label\nhi,a\n", {"max_length": 0}, "max_length"),
        ("text,label\nhi,\n", {}, "empty in row 1"),
    ],
)
def test_dataset_errors(tmp_path, tok, content, kw, match):
    p = _csv(tmp_path, content)
    with pytest.raises(TextDatasetError, match=match) as err:
        load_text_table(_spec(p, **{"tokenizer_path": tok, **kw}))
    assert err.value.code == "invalid_dataset" and isinstance(err.value, ValueError)


def test_unreadable_files(tmp_path, tok):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(TextDatasetError, match="PARQUET"):
        load_text_table(_spec(bad, "parquet", tokenizer_path=tok))
    bad.write_text('{"text": "hi"}\n{oops\n')
    with pytest.raises(TextDatasetError, match="line 2"):
        load_text_table(_spec(bad, "jsonl", tokenizer_path=tok))
    with pytest.raises(TextDatasetError, match="does not exist"):
        load_text_table(_spec(tmp_path / "nope.csv", tokenizer_path=tok))
    with pytest.raises(TextDatasetError, match="tokenizer"):
        load_text_table(_spec(_csv(tmp_path, "text\nhi\n"), tokenizer_path=str(bad)))


def test_pretokenised_jsonl_and_csv(tmp_path):
    p = tmp_path / "d.jsonl"
    rows = [{"input_ids": [5, 6, 7, 8, 9], "label": "x"}, {"input_ids": [3], "label": "y"}]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    x, y, classes = load_text_table(_spec(p, "jsonl", max_length=4))
    assert x.tolist() == [[5, 6, 7, 8], [3, 0, 0, 0]] and y.tolist() == [0, 1] and classes == ["x", "y"]
    c = _csv(tmp_path, 'input_ids,label\n"[1, 2]",0\n3 4 5,1\n')
    x, y, _ = load_text_table(_spec(c, max_length=3))
    assert x.tolist() == [[1, 2, 0], [3, 4, 5]] and y.tolist() == [0, 1]
    bad = _csv(tmp_path, "input_ids\n1 two\n", "bad.csv")
    with pytest.raises(TextDatasetError, match="row 1"):
        load_text_table(_spec(bad))


def test_pretokenised_parquet(tmp_path, tok):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"input_ids": [[2, 3], [4, 4, 4]], "label": [1, 0]}), p)
    x, y, classes = load_text_table(_spec(p, "parquet", max_length=3, tokenizer_path=tok))
    assert x.tolist() == [[2, 3, 0], [4, 4, 4]] and y.tolist() == [1, 0] and classes == ["0", "1"]
    info = text_info(_spec(p, "parquet", max_length=3, tokenizer_path=tok))
    assert info == {
        "rows": 2,
        "columns": ["input_ids", "label"],
        "max_length": 3,
        "vocab_size": 5,
        "pad_id": 0,
        "mean_length": 2.5,
        "has_labels": True,
        "classes": ["0", "1"],
    }
    pq.write_table(pa.table({"input_ids": [[2, 9]]}), p)
    with pytest.raises(TextDatasetError, match="id 9"):
        load_text_table(_spec(p, "parquet", tokenizer_path=tok))


def test_text_info_jsonl_text(tmp_path, tok):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "hello world", "label": "a"}\n{"text": "foo"}\n')
    with pytest.raises(TextDatasetError, match="empty in row 2"):
        text_info(_spec(p, "jsonl", tokenizer_path=tok))
    p.write_text('{"text": "hello world"}\n{"text": "foo"}\n')
    info = text_info(_spec(p, "jsonl", tokenizer_path=tok, max_length=8))
    assert info["rows"] == 2 and info["mean_length"] == 1.5 and info["vocab_size"] == 5
    assert info["has_labels"] is False and info["classes"] is None


STUDENTS = [
    {"architecture": "lstm"},
    {"architecture": "lstm", "bidirectional": True, "num_layers": 2, "pooling": "last", "dropout": 0.1},
    {"architecture": "textcnn"},
    {"architecture": "transformer", "d_model": 32, "heads": 4, "layers": 1},
]


def _ids(b=4, length=16, pad=0) -> torch.Tensor:
    x = torch.randint(1, 50, (b, length), generator=torch.Generator().manual_seed(0))
    x[0, 5:] = pad
    x[1, :] = pad
    return x


@pytest.mark.parametrize("spec", STUDENTS, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_student_forward_and_trace(spec):
    model = build_text_student({**spec, "pad_id": 0}, [16], 10, 50).eval()
    x = _ids()
    out = model(x)
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, x)
        buf = io.BytesIO()
        torch.jit.save(traced, buf)
        buf.seek(0)
        loaded = torch.jit.load(buf)
    x2 = _ids(3)
    torch.testing.assert_close(loaded(x2), model(x2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.testing.assert_close(torch.jit.script(model)(x2), model(x2))
        program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.testing.assert_close(program.module()(x2), model(x2))


def test_lstm_ignores_padding():
    model = build_text_student({"architecture": "lstm", "pad_id": 0}, [16], 3, 50).eval()
    x = _ids()
    torch.testing.assert_close(model(x[:1, :5]), model(x[:1]))


@pytest.mark.parametrize(
    "spec,match",
    [
        ({"architecture": "transformer", "d_model": 30, "heads": 4}, "divisible"),
        ({"architecture": "lstm", "hidden": 3}, "unknown lstm parameter"),
        ({"architecture": "rnn"}, "unknown text architecture"),
        ({"architecture": "textcnn", "kernel_sizes": [3, 40]}, "longer than max_length"),
        ({"architecture": "textcnn", "kernel_sizes": []}, "kernel_sizes"),
        ({"architecture": "lstm", "dropout": 1.5}, "dropout"),
        ({"architecture": "lstm", "hidden_dim": 0}, "hidden_dim"),
        ({"architecture": "lstm", "pad_id": 60}, "pad_id"),
    ],
)
def test_student_bad_params(spec, match):
    with pytest.raises(ValueError, match=match):
        build_text_student(spec, [16], 10, 50)


def test_resolve_defaults():
    p = resolve_text_student({"architecture": "transformer"})
    assert p["ff_dim"] == 256 and p["heads"] == 4 and p["pad_id"] == 0


def test_lstm_onnx_matches_torch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = build_text_student({"architecture": "lstm", "pad_id": 0}, [16], 10, 50).eval()
    path = tmp_path / "lstm.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (_ids(),),
            str(path),
            input_names=["input_ids"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = _ids(3)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, model(x).detach().numpy(), atol=1e-4, rtol=0)


def test_lstm_teacher_fixture():
    from tests.support.text import text_fixture

    f = text_fixture()
    info = f["teacher_info"]
    assert info["eval_accuracy"] >= 0.75, info
    assert 500_000 <= info["num_parameters"] <= 2_000_000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        teacher = torch.jit.load(str(f["teacher"]))
    spec = _spec(f["eval"], tokenizer_path=str(f["tokenizer"]), max_length=f["max_length"], classes=info["classes"])
    x, y, classes = load_text_table(spec)
    assert classes == f["classes"] and x.shape[1] == 32
    with torch.no_grad():
        acc = (teacher(torch.from_numpy(x)).argmax(1).numpy() == y).mean()
    assert acc == pytest.approx(info["eval_accuracy"], abs=1e-6)
