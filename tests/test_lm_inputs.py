"""The causal-LM checks at submit (app/lm_inputs.py), read from the uploads' validated info alone: logit KD refuses
a student whose tokenizer maps tokens to ids differently even at equal size, and chat rows need a teacher with a
chat template; the vocabulary fingerprint they compare is the one validation records (worker/engine/lm_inspect.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.errors import Unprocessable
from app.lm_inputs import check_lm_job
from app.models import Dataset, Model
from contract.wire import JobCreate
from tests.support import hf_folders as hf
from worker.engine.hf_inspect import inspect_hf

PROMPTS = {"kind": "prompts", "has_completions": True, "has_messages": False}


def _lm(vocab: int = 100, fingerprint: str | None = "a" * 64, chat: bool = False) -> Model:
    info = {"task": "causal_lm", "vocab_size": vocab, "vocabulary_sha256": fingerprint, "chat_template": chat}
    return Model(id="mdl_x", format="hf", info=info)


def _check(method: str, teacher: Model, student: Model | None, train_info: dict = PROMPTS) -> None:
    body = JobCreate.model_validate({
        "teacher_id": "mdl_t", "train_dataset_id": "dst_a", "eval_dataset_id": "dst_b", "lm": {"method": method},
        **({"student": {"model_id": "mdl_s"}} if student is not None else {}),
    })  # fmt: skip
    train, eval_ = (
        Dataset(id="dst_a", format="jsonl", info=train_info),
        Dataset(id="dst_b", format="jsonl", info=PROMPTS),
    )
    check_lm_job(body, teacher, train, eval_, student)


def test_logit_kd_refuses_a_same_size_vocabulary_that_maps_tokens_differently():
    with pytest.raises(Unprocessable, match="map tokens to ids differently.*seq_kd") as refused:
        _check("forward_kl", _lm(), _lm(fingerprint="b" * 64))
    assert refused.value.code == "invalid_student"
    _check("seq_kd", _lm(), _lm(fingerprint="b" * 64))  # sequence-level KD takes any tokenizer pair
    _check("offline", _lm(), _lm())  # the same fingerprint
    _check("jsd", _lm(fingerprint=None), _lm())  # an upload validated before fingerprints: the sizes decide
    with pytest.raises(Unprocessable, match="100 ids and the teacher's 120"):
        _check("jsd", _lm(vocab=120), _lm())


def test_chat_rows_need_a_teacher_with_a_chat_template():
    chats = {**PROMPTS, "has_messages": True}
    with pytest.raises(Unprocessable, match="chat template") as refused:
        _check("forward_kl", _lm(chat=False), None, chats)
    assert refused.value.code == "input_mismatch"
    _check("forward_kl", _lm(chat=True), None, chats)
    _check("forward_kl", _lm(chat=False), None)  # prompt/completion rows need no template


def test_validation_fingerprints_the_vocabulary_by_content(tmp_path):
    """One tokenizer saved twice: one fingerprint; as many tokens but other ones: another fingerprint."""
    first, _ = hf.gpt2_lm(tmp_path / "a")
    again, _ = hf.gpt2_lm(tmp_path / "b")
    other = Path(shutil.copytree(first, tmp_path / "c"))
    hf._tokenizer(other, [f"v{i}" for i in range(60)])  # gpt2_lm's tokenizer has 60 words w0..w59
    infos = [inspect_hf(str(hf.zip_folder(f, tmp_path / f"{f.name}.zip"))) for f in (first, again, other)]
    assert infos[0]["vocabulary_sha256"] and infos[0]["vocabulary_sha256"] == infos[1]["vocabulary_sha256"]
    assert infos[2]["vocab_size"] == infos[0]["vocab_size"]
    assert infos[2]["vocabulary_sha256"] != infos[0]["vocabulary_sha256"]
