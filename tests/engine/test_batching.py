"""Speed features that must not change results: length bucketing and trimming, resumable with them,
torch.compile falling back cleanly, pinned host batches."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tests.engine.test_text_engine import PAD, spec, text_config, text_files  # noqa: F401 - fixture
from worker.engine import DistillConfig, EngineError, distill
from worker.engine.batching import (
    BUCKET_CHUNK,
    batch_width,
    bucket_by_length,
    fetch,
    trim_margin,
    used_lengths,
)
from worker.engine.text_students import build_text_student


def test_used_lengths_count_to_the_last_real_token():
    x = torch.tensor([[5, 6, PAD, PAD], [PAD, PAD, PAD, PAD], [5, PAD, 7, PAD], [5, 6, 7, 8]])
    assert used_lengths(x, PAD).tolist() == [2, 0, 3, 4]


def test_bucketing_is_a_seeded_permutation_of_similar_length_batches():
    n, batch = 1000, 10
    lengths = torch.randint(1, 100, (n,), generator=torch.Generator().manual_seed(0))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    bucketed = bucket_by_length(perm, lengths, batch, torch.Generator().manual_seed(2))
    assert sorted(bucketed.tolist()) == list(range(n))
    again = bucket_by_length(perm, lengths, batch, torch.Generator().manual_seed(2))
    assert torch.equal(bucketed, again)
    spread = [int(lengths[b].max() - lengths[b].min()) for b in bucketed.split(batch)]
    random_spread = [int(lengths[b].max() - lengths[b].min()) for b in perm.split(batch)]
    assert sum(spread) < 0.2 * sum(random_spread)
    # Batches are shuffled across chunks: the epoch does not run short-to-long.
    firsts = [int(lengths[b].min()) for b in bucketed.split(batch)[:BUCKET_CHUNK]]
    assert firsts != sorted(firsts)


def test_a_partial_last_batch_stays_last():
    lengths = torch.arange(25)
    out = bucket_by_length(torch.arange(25).flip(0), lengths, 10, torch.Generator().manual_seed(0))
    assert sorted(out.tolist()) == list(range(25)) and len(out.split(10)[-1]) == 5


def test_batch_width_covers_the_longest_row_plus_margin_rounded_up():
    lengths = torch.tensor([3, 9, 17, 2])
    assert batch_width(lengths, torch.tensor([0, 3]), 0, 32) == 8
    assert batch_width(lengths, torch.tensor([0, 1]), 2, 32) == 16
    assert batch_width(lengths, torch.tensor([2]), 20, 32) == 32
    assert batch_width(torch.tensor([0]), torch.tensor([0]), 0, 32) == 8


@pytest.mark.parametrize(
    "student",
    [
        {"architecture": "lstm", "embedding_dim": 8, "hidden_dim": 8},
        {"architecture": "lstm", "embedding_dim": 8, "hidden_dim": 8, "pooling": "last", "num_layers": 2},
        {"architecture": "textcnn", "embedding_dim": 8, "num_filters": 4, "kernel_sizes": [2, 5]},
        {"architecture": "transformer", "d_model": 8, "heads": 2, "layers": 1, "dropout": 0.0},
    ],
)
def test_trimmed_batches_give_the_students_full_width_outputs(student):
    torch.manual_seed(0)
    model = build_text_student({**student, "pad_id": PAD}, [40], 3, 20).eval()
    x = torch.full((6, 40), PAD)
    for i, n in enumerate([1, 3, 7, 2, 11, 5]):
        x[i, :n] = torch.randint(4, 20, (n,))
    margin = trim_margin(model, x, PAD)
    assert margin is not None
    width = batch_width(used_lengths(x, PAD), torch.arange(6), margin, 40)
    assert width < 40
    with torch.no_grad():
        torch.testing.assert_close(model(x[:, :width]), model(x), rtol=1e-5, atol=1e-6)


def test_bidirectional_lstm_and_float_data_are_never_trimmed():
    model = build_text_student({"architecture": "lstm", "bidirectional": True}, [8], 2, 10)
    assert trim_margin(model, torch.zeros(2, 8, dtype=torch.long), 0) is None
    uni = build_text_student({"architecture": "lstm"}, [8], 2, 10)
    assert trim_margin(uni, torch.zeros(2, 8), 0) is None and trim_margin(uni, torch.zeros(2, 8).long(), None) is None


def test_fetch_gathers_rows_and_columns():
    source = torch.arange(20).view(5, 4)
    out = fetch(source, torch.tensor([3, 1]), "cpu", width=2)
    assert out.tolist() == [[12, 13], [4, 5]]


def _stop_after(calls: int):
    count = {"n": 0}

    def should_stop() -> bool:
        count["n"] += 1
        return count["n"] > calls

    return should_stop


@pytest.mark.parametrize("augmentation", [None, {"token_dropout": 0.2, "token_mask": 0.1}])
def test_bucketed_text_run_resumes_bitwise(tmp_path, text_files, augmentation):  # noqa: F811
    tok = text_files["tokenizer"]
    config = text_config(
        student={"architecture": "lstm", "embedding_dim": 8, "hidden_dim": 8, "dropout": 0.3},
        epochs=3,
        augmentation=augmentation,
    )
    args = (str(text_files["teacher"]), spec(text_files["train"], tok), None, config)
    distill(*args, str(tmp_path / "ref"))
    checkpoints = str(tmp_path / "ckpt")
    with pytest.raises(EngineError):
        distill(*args, str(tmp_path / "a"), should_stop=_stop_after(13), checkpoint_dir=checkpoints)
    distill(*args, str(tmp_path / "b"), checkpoint_dir=checkpoints)
    reference = load_file(str(tmp_path / "ref" / "student.safetensors"))
    resumed = load_file(str(tmp_path / "b" / "student.safetensors"))
    assert reference.keys() == resumed.keys()
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)


def test_compile_failure_falls_back_with_a_warning_and_the_same_weights(
    tmp_path,
    monkeypatch,
    text_files,  # noqa: F811
):
    tok = text_files["tokenizer"]
    base = text_config(student={"architecture": "lstm", "embedding_dim": 8, "hidden_dim": 8, "dropout": 0.3})
    args = (str(text_files["teacher"]), spec(text_files["train"], tok), None)
    distill(*args, base, str(tmp_path / "eager"))

    def broken_compile(model, **kwargs):
        def run(x):
            torch.rand(3)  # a failed attempt that consumed randomness must not change the run
            raise RuntimeError("inductor: no C++ compiler")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    events = []
    compiled = DistillConfig.from_dict({**base.to_dict(), "compile": True})
    distill(*args, compiled, str(tmp_path / "compiled"), progress=events.append)
    warnings = [e for e in events if e.type == "warning" and "torch.compile failed" in e.message]
    assert len(warnings) == 1 and "no C++ compiler" in warnings[0].message
    eager = load_file(str(tmp_path / "eager" / "student.safetensors"))
    fallback = load_file(str(tmp_path / "compiled" / "student.safetensors"))
    assert all(torch.equal(eager[k], fallback[k]) for k in eager)


def test_compile_raising_at_once_also_falls_back(tmp_path, monkeypatch, text_files):  # noqa: F811
    def refuse(model, **kwargs):
        raise RuntimeError("torch.compile is not supported on this platform")

    monkeypatch.setattr(torch, "compile", refuse)
    events = []
    config = text_config(compile=True, epochs=1)
    tok = text_files["tokenizer"]
    distill(
        str(text_files["teacher"]),
        spec(text_files["train"], tok),
        None,
        config,
        str(tmp_path),
        progress=events.append,
    )
    assert any(e.type == "warning" and "torch.compile failed" in e.message for e in events)
