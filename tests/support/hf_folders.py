"""Tiny Hugging Face model folders built from configs (nothing is downloaded), zipped or tarred as users upload them."""

from __future__ import annotations

import json
import pickle
import tarfile
import zipfile
from pathlib import Path

CANARY = "distillery-canary-7f3a"


def _tokenizer(folder: Path, words: list[str]) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", model_max_length=64)
    fast.save_pretrained(folder)


def bert_classifier(
    folder: Path, labels=("neg", "pos", "neutral"), layers: int = 2, vocab: int = 64
) -> tuple[Path, int]:
    """A small BERT sequence classifier with its tokenizer, saved with save_pretrained; (folder, parameters)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    model = BertForSequenceClassification(config)
    model.save_pretrained(folder)
    _tokenizer(folder, [f"w{i}" for i in range(vocab - 4)])
    return folder, sum(p.numel() for p in model.parameters())


def gpt2_lm(folder: Path) -> tuple[Path, int]:
    """A 2-layer GPT-2 causal LM with a chat template; (folder, parameters)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=16, n_layer=2, n_head=2, n_positions=64))
    model.save_pretrained(folder)
    _tokenizer(folder, [f"w{i}" for i in range(60)])
    (folder / "chat_template.jinja").write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    unique = {id(p): p.numel() for p in model.parameters()}
    return folder, sum(unique.values())


class _Canary:
    """Unpickling this writes the canary file and returns the canary string: proof that a pickle was loaded."""

    def __init__(self, where: str):
        self.where = where

    def __reduce__(self):
        code = f"open({self.where!r}, 'w').write({CANARY!r}) or {CANARY!r}"
        return (eval, (code,))


def pickle_only(folder: Path, canary_file: Path) -> Path:
    """A folder whose weights are only a pickle `pytorch_model.bin` that would write `canary_file` if loaded."""
    bert_classifier(folder)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Canary(str(canary_file))))
    return folder


def with_remote_code(folder: Path) -> Path:
    """A folder whose config asks for its own modelling code through auto_map, shipped as a .py file."""
    bert_classifier(folder)
    _edit_config(folder, auto_map={"AutoModelForSequenceClassification": "modeling_evil.EvilModel"})
    (folder / "modeling_evil.py").write_text(f"open('/tmp/{CANARY}', 'w')\n")
    return folder


def with_config(folder: Path, **changes) -> Path:
    """A valid folder whose config.json is then edited."""
    bert_classifier(folder)
    _edit_config(folder, **changes)
    return folder


def _edit_config(folder: Path, **changes) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def zip_folder(folder: Path, out: Path, top: str | None = "model") -> Path:
    """The folder as a zip, its files under `top/` (or at the top when None)."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                name = path.relative_to(folder).as_posix()
                zf.write(path, f"{top}/{name}" if top else name)
    return out


def tar_folder(folder: Path, out: Path) -> Path:
    """The folder as a plain (uncompressed) tar with its files at the top."""
    with tarfile.open(out, "w") as tf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                tf.add(path, path.relative_to(folder).as_posix())
    return out


def train_bert_teacher(
    files: dict, out: Path, epochs: int = 12, max_length: int = 32, layers: int = 2, intermediate_size: int = 128
) -> tuple[Path, float, int]:
    """A small BERT classifier (width 64) trained here on the real-text fixture with its tokenizer; (zip, eval
    accuracy, parameters). The folder holds the fixture's tokenizer.json, as a user's save_pretrained folder would."""
    import shutil
    from types import SimpleNamespace

    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from worker.engine.text import load_text_table

    def spec(name: str, classes=None):
        return SimpleNamespace(
            path=str(files[name]), format="csv", label_column=None, text_column=None,
            tokenizer_path=str(files["tokenizer"]), max_length=max_length, classes=classes,
        )  # fmt: skip

    x, y, classes = load_text_table(spec("train"))
    xe, ye, _ = load_text_table(spec("eval", classes))
    vocab = json.loads(Path(files["tokenizer"]).read_text())["model"]["vocab"]
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=64, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_length, num_labels=len(classes), pad_token_id=0,
        id2label=dict(enumerate(classes)), label2id={c: i for i, c in enumerate(classes)},
    )  # fmt: skip
    model = BertForSequenceClassification(config)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3 if layers <= 2 else 1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            opt.zero_grad()
            ids = xt[idx]
            model(input_ids=ids, attention_mask=(ids != 0).long(), labels=yt[idx]).loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        ids = torch.from_numpy(xe)
        accuracy = float((model(input_ids=ids, attention_mask=(ids != 0).long()).logits.argmax(1).numpy() == ye).mean())
    folder = out / "bert-teacher"
    model.save_pretrained(folder)
    shutil.copy(files["tokenizer"], folder / "tokenizer.json")
    return zip_folder(folder, out / "bert-teacher.zip"), accuracy, sum(p.numel() for p in model.parameters())
