"""Language-model rows (issue 12, point 3): prompt/completion and chat rows, the completion's tokens marked for the
loss, and the generation comparison's ROUGE-L."""

from __future__ import annotations

import json

import pytest

from tests.support import hf_folders as hf
from worker.engine.errors import EngineError
from worker.engine.lm_data import encode, encode_prompts, load_lm_rows
from worker.engine.lm_generate import compare_generations, rouge_l
from worker.engine.lm_models import load_tokenizer_folder


@pytest.fixture
def tokenizer(tmp_path):
    folder, _ = hf.gpt2_lm(tmp_path / "gpt2")  # words w0..w59, a chat template that concatenates the contents
    (folder / "chat_template.jinja").write_text(
        "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    return load_tokenizer_folder(str(folder))


def _write(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_chat_rows_are_rendered_with_the_teacher_chat_template(tmp_path, tokenizer):
    rows = load_lm_rows(
        _write(tmp_path / "d.jsonl", [
            {"messages": [{"role": "user", "content": "w1 w2"}, {"role": "assistant", "content": "w3 w4"}]},
            {"prompt": "w5", "completion": "w6 w7"},
            {"prompt": "w8"},
        ]),
        tokenizer,
    )  # fmt: skip
    assert rows.prompts[0] == "<user> w1 w2 <assistant>"
    assert rows.completions == ["w3 w4", "w6 w7", None]
    with pytest.raises(EngineError, match="row 1"):
        load_lm_rows(_write(tmp_path / "bad.jsonl", [{"text": "w1"}]), tokenizer)


def test_only_the_completion_tokens_are_learnt_and_padding_is_masked(tokenizer):
    batch = encode(tokenizer, ["w1 w2 w3", "w4"], ["w5 w6", "w7"], max_length=16)
    assert batch.ids.shape == (2, 5)
    assert batch.completion.tolist() == [[False, False, False, True, True], [False, True, False, False, False]]
    assert batch.attention.tolist() == [[True] * 5, [True, True, False, False, False]]
    targets, mask = batch.targets()
    # The logit at position t predicts token t + 1: the loss sees w5 and w6 after "w1 w2 w3", w7 after "w4".
    assert [tokenizer.convert_ids_to_tokens(int(t)) for t in targets[mask]] == ["w5", "w6", "w7"]
    cut = encode(tokenizer, ["w1 w2 w3"], ["w5 w6"], max_length=4)
    assert cut.ids.shape == (1, 4) and cut.completion.tolist() == [[False, False, False, True]]
    ids, attention = encode_prompts(tokenizer, ["w1 w2", "w3"], 8)
    assert attention.tolist() == [[1, 1], [0, 1]]  # left-padded for generation


def test_rouge_l_is_the_f1_of_the_longest_common_subsequence():
    assert rouge_l("a b c d", "a b c d") == 1.0
    assert rouge_l("a b c d", "e f") == 0.0
    # LCS "a c d" (3 words): precision 3/4, recall 3/5, F1 = 2 * 0.75 * 0.6 / 1.35.
    assert rouge_l("a b c d", "a x c d y") == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert rouge_l("", "") == 1.0 and rouge_l("a", "") == 0.0
    compared = compare_generations(["a b", "c"], ["a b", "d"], ["p", "q"])
    assert compared["exact_match"] == 0.5 and compared["rouge_l"] == 0.5
