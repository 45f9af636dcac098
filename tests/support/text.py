"""Synthetic 10-class text corpus, its tokenizer.json and a TorchScript LSTM teacher for tests."""

from __future__ import annotations

import csv
import functools
import json
import logging
import random
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

logger = logging.getLogger(__name__)

CLASSES = ["sports", "politics", "science", "music", "food", "travel", "finance", "health", "weather", "technology"]
_KEYWORDS = {
    "sports": "goal match team score coach league player stadium referee season tournament striker",
    "politics": "election vote senate minister policy campaign parliament ballot law party debate governor",
    "science": "experiment theory molecule physics biology research laboratory atom hypothesis data cell",
    "music": "guitar melody concert album song band rhythm chorus drummer lyrics symphony piano",
    "food": "recipe kitchen bake flavor spice dinner chef sauce dessert bread soup garlic",
    "travel": "flight hotel passport beach journey tourist luggage island airport cruise map hostel",
    "finance": "stock market bank loan investor dividend bond profit budget currency interest tax",
    "health": "doctor hospital vaccine patient nurse diet therapy symptom clinic medicine fever sleep",
    "weather": "rain storm forecast sunny cloud snow thunder humidity wind temperature frost breeze",
    "technology": "software computer robot chip internet app server code laptop network database gadget",
}
_FILLER = (
    "the a an of to in on for with and but or is was are were this that it its at by from as be "
    "have has had will would can could very really quite just some many more most other new "
    "old good great small big today yesterday people time year way day thing man woman world "
    "life part place week case point group number fact report story news"
).split()
MAX_LENGTH = 32


def _sentence(rng: random.Random, label: str) -> str:
    n = rng.randint(4, 30)
    own = _KEYWORDS[label].split()
    words = []
    for _ in range(n):
        r = rng.random()
        if r < 0.22:
            words.append(rng.choice(own))
        elif r < 0.30:  # distractor keyword from another class
            words.append(rng.choice(_KEYWORDS[rng.choice(CLASSES)].split()))
        else:
            words.append(rng.choice(_FILLER))
    if not any(w in own for w in words):
        words[rng.randrange(n)] = rng.choice(own)
    return " ".join(words)


def make_corpus(n: int, seed: int, label_noise: float = 0.05) -> list[tuple[str, str]]:
    """Rows (text, string label); a label_noise fraction of labels are replaced at random."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = CLASSES[i % len(CLASSES)]
        text = _sentence(rng, label)
        if rng.random() < label_noise:
            label = rng.choice(CLASSES)
        rows.append((text, label))
    rng.shuffle(rows)
    return rows


def build_tokenizer(texts: list[str], path: Path, max_words: int | None = None) -> Path:
    """Write a WordLevel tokenizer.json built from the corpus: [PAD]=0, [UNK]=1, padding configured; the
    `max_words` most frequent words when given, the others [UNK]."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    counts = Counter(w for t in texts for w in t.lower().split())
    words = sorted(counts, key=lambda w: (-counts[w], w))[:max_words]
    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    tok.save(str(path))
    return path


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)


def make_text_fixture(out_dir: str | Path, n_train: int = 3000, n_eval: int = 600) -> dict:
    """Write train.csv, eval.csv (text, string label) and tokenizer.json; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, evals = make_corpus(n_train, seed=1), make_corpus(n_eval, seed=2)
    _write_csv(out / "train.csv", train)
    _write_csv(out / "eval.csv", evals)
    build_tokenizer([t for t, _ in train], out / "tokenizer.json")
    return {
        "dir": out,
        "train": out / "train.csv",
        "eval": out / "eval.csv",
        "tokenizer": out / "tokenizer.json",
        "classes": sorted(CLASSES),
        "max_length": MAX_LENGTH,
    }


class LSTMTeacher(nn.Module):
    """Bidirectional LSTM over token ids with masked mean+max pooling."""

    def __init__(
        self, vocab_size: int, num_classes: int, embedding_dim: int = 128, hidden_dim: int = 192, pad_id: int = 0
    ):
        super().__init__()
        self.pad_id = pad_id
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_id)
        self.lstm = nn.LSTM(embedding_dim, hidden_dim, batch_first=True, bidirectional=True)
        self.head = nn.Sequential(nn.Linear(4 * hidden_dim, 256), nn.ReLU(), nn.Linear(256, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = (x != self.pad_id).unsqueeze(-1).to(torch.float32)
        out, _ = self.lstm(self.embedding(x))
        mean = (out * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        mx = (out * mask - (1.0 - mask) * 1e4).amax(1)
        return self.head(torch.cat([mean, mx], dim=1))


def _spec(path: Path, tokenizer: Path, classes=None) -> SimpleNamespace:
    return SimpleNamespace(
        path=str(path),
        format="csv",
        label_column=None,
        text_column=None,
        tokenizer_path=str(tokenizer),
        max_length=MAX_LENGTH,
        classes=classes,
    )


def _fit(
    model: LSTMTeacher, opt, xt: torch.Tensor, yt: torch.Tensor, epochs: int, batch_size: int, gen: torch.Generator
) -> None:
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(batch_size):
            xb = xt[idx]
            xb = xb[:, : max(1, int((xb != model.pad_id).sum(1).max()))]  # right padding: trim pad columns
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yt[idx]).backward()
            opt.step()


def train_lstm_teacher(
    out_dir: str | Path,
    epochs: int = 4,
    seed: int = 0,
    embedding_dim: int = 128,
    hidden_dim: int = 192,
    batch_size: int = 64,
) -> Path:
    """Train the LSTM teacher on the fixture in out_dir and save TorchScript teacher.pt (+ teacher.json)."""
    from worker.engine.text import load_text_table, pad_id_of

    out = Path(out_dir)
    if not (out / "train.csv").exists():
        make_text_fixture(out)
    tok = out / "tokenizer.json"
    x, y, classes = load_text_table(_spec(out / "train.csv", tok))
    xe, ye, _ = load_text_table(_spec(out / "eval.csv", tok, classes))
    vocab = json.loads(tok.read_text())["model"]["vocab"]
    torch.manual_seed(seed)
    model = LSTMTeacher(len(vocab), len(classes), embedding_dim, hidden_dim, pad_id_of(str(tok)))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    start = time.monotonic()
    gen = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small LSTM steps: one thread is faster, and far faster on a busy machine
    try:
        _fit(model, opt, torch.from_numpy(x), torch.from_numpy(y), epochs, batch_size, gen)
    finally:
        torch.set_num_threads(threads)
    model.eval()
    with torch.no_grad():
        acc = float((model(torch.from_numpy(xe)).argmax(1).numpy() == ye).mean())
    params = sum(p.numel() for p in model.parameters())
    path = out / "teacher.pt"
    with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; it stays an accepted format
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(model, torch.from_numpy(x[:2])), str(path))
    info = {
        "eval_accuracy": acc,
        "num_parameters": params,
        "train_seconds": time.monotonic() - start,
        "classes": classes,
        "max_length": MAX_LENGTH,
    }
    (out / "teacher.json").write_text(json.dumps(info))
    logger.info("LSTM teacher: accuracy %.3f, %d parameters", acc, params)
    return path


@functools.lru_cache(maxsize=1)
def text_fixture() -> dict:
    """Session-cached fixture: corpus, tokenizer and trained teacher in one temp dir."""
    out = Path(tempfile.mkdtemp(prefix="distillery-text-"))
    files = make_text_fixture(out)
    files["teacher"] = train_lstm_teacher(out)
    files["teacher_info"] = json.loads((out / "teacher.json").read_text())
    return files
