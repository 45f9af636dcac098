"""A causal-LM fixture from real text on this machine: docstrings of Python's standard library, a byte-level BPE
tokenizer trained on them, and a small Llama trained on them here (nothing downloaded).

The paragraphs are split three ways, disjoint: the teacher's own training text (its "pretraining"), the job's
training rows and the held-out rows; a row's prompt is a paragraph's first words and its completion the rest.
"""

from __future__ import annotations

import ast
import functools
import json
import random
import re
import sysconfig
import tempfile
import zipfile
from pathlib import Path

from tests.support.hf_folders import zip_folder

WORDS = re.compile(r"[a-z]+")
VOCAB = 1000
PROMPT_WORDS = 6
MAX_WORDS = 20


def paragraphs(limit: int = 6000) -> list[str]:
    """Distinct docstring paragraphs of the standard library (lowercase words, 10 or more, cut to MAX_WORDS),
    shuffled in a fixed order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    seen: dict[str, None] = {}
    for path in sorted(root.rglob("*.py")):
        rel = str(path.relative_to(root))
        if "test" in rel or "site-packages" in rel or "idlelib" in rel:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef | ast.Module):
                for paragraph in (ast.get_docstring(node) or "").split("\n\n"):
                    words = WORDS.findall(paragraph.lower())
                    if len(words) >= 10:
                        seen.setdefault(" ".join(words[:MAX_WORDS]))
    rows = list(seen)
    random.Random(0).shuffle(rows)
    return rows[:limit]


def build_lm_tokenizer(texts: list[str], folder: Path, size: int = VOCAB) -> None:
    """A byte-level BPE tokenizer (GPT-2's kind, no unknown token) of `size` tokens trained on `texts`:
    [PAD] 0, </s> 1 (EOS); every word gets its leading-space marker, so prompt and completion split alike."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=size, special_tokens=["[PAD]", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", eos_token="</s>", model_max_length=128)
    fast.save_pretrained(folder)


def write_rows(path: Path, texts: list[str], with_completion: bool = True) -> Path:
    """JSONL rows: the first PROMPT_WORDS words as the prompt, the rest as the completion."""
    with open(path, "w", encoding="utf-8") as f:
        for text in texts:
            words = text.split()
            row = {"prompt": " ".join(words[:PROMPT_WORDS])}
            if with_completion:
                row["completion"] = " ".join(words[PROMPT_WORDS:])
            f.write(json.dumps(row) + "\n")
    return path


def train_llama(folder: Path, texts: list[str], layers: int, hidden: int, epochs: int, seed: int = 0) -> None:
    """A Llama trained here on whole paragraphs (next-token loss), saved with its tokenizer in `folder`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(folder)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128, tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    rows = [tok(t)["input_ids"][:48] + [tok.eos_token_id] for t in texts]
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), tok.pad_token_id)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    attention = ids != tok.pad_token_id
    labels = ids.masked_fill(~attention, -100)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    steps = epochs * ((len(rows) + 63) // 64)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(rows), generator=gen).split(64):
            n = int(attention[idx].sum(1).max())
            loss = model(input_ids=ids[idx, :n], attention_mask=attention[idx, :n].long(), labels=labels[idx, :n]).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
    model.eval()
    model.save_pretrained(folder)


@functools.lru_cache(maxsize=1)
def lm_fixture() -> dict:
    """Session-cached: the teacher (6 layers x 64, zipped), train/eval JSONL rows, a student with another
    tokenizer (for the vocabulary-mismatch case)."""
    out = Path(tempfile.mkdtemp(prefix="distillery-lm-"))
    texts = paragraphs()
    cut_a, cut_b = int(0.6 * len(texts)), int(0.85 * len(texts))
    teacher_texts, train_texts, eval_texts = texts[:cut_a], texts[cut_a:cut_b], texts[cut_b:]
    train_texts = train_texts[:1000]  # the job's own rows: fewer than the teacher saw, as with a real teacher
    folder = out / "teacher"
    build_lm_tokenizer(teacher_texts, folder)
    # The teacher has also seen the job's training text (as a teacher fine-tuned on its task would have); the
    # held-out rows are new to every model.
    train_llama(folder, teacher_texts + train_texts, layers=6, hidden=64, epochs=5)
    other = out / "other-student"
    build_lm_tokenizer(teacher_texts, other, size=VOCAB - 200)
    train_llama(other, teacher_texts[:200], layers=2, hidden=64, epochs=1, seed=1)
    return {
        "dir": out,
        "teacher": zip_folder(folder, out / "teacher.zip"),
        "train": write_rows(out / "train.jsonl", train_texts),
        "eval": write_rows(out / "eval.jsonl", eval_texts[:400]),
        "other_student": zip_folder(other, out / "other-student.zip"),
    }


def unzip(path: Path, into: Path) -> Path:
    """The archive's files extracted into `into`."""
    with zipfile.ZipFile(path) as zf:
        zf.extractall(into)
    return into
