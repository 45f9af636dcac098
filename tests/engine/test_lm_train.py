"""Training a causal-LM student (issue 12, point 8): length-bucketed batches, gradient checkpointing and the
GPU running out of memory, on tiny Llamas on the CPU."""

from __future__ import annotations

import pytest
import torch

from worker.engine.errors import EngineError
from worker.engine.lm_data import LMBatch, length_batches
from worker.engine.lm_train import LMTrainSettings, train_lm


def _lengths(rows: int = 640) -> torch.Tensor:
    """Mixed lengths, 2 to 64 tokens."""
    return torch.randint(2, 65, (rows,), generator=torch.Generator().manual_seed(1))


def test_length_batches_train_every_row_once_per_epoch_in_a_new_order_each_epoch():
    lengths = _lengths()
    generator = torch.Generator().manual_seed(0)
    first, second = length_batches(lengths, 32, generator), length_batches(lengths, 32, generator)
    for epoch in (first, second):
        assert sorted(torch.cat(epoch).tolist()) == list(range(len(lengths)))
        assert all(1 <= len(b) <= 32 for b in epoch)
    assert torch.cat(first).tolist() != torch.cat(second).tolist()
    # Not only the order of the batches: which rows share a batch changes too.
    assert {tuple(sorted(b.tolist())) for b in first} != {tuple(sorted(b.tolist())) for b in second}


def test_length_batches_hold_rows_of_similar_length_so_trimming_removes_padding():
    lengths = _lengths()
    generator = torch.Generator().manual_seed(0)
    bucketed = length_batches(lengths, 32, generator)
    shuffled = torch.randperm(len(lengths), generator=generator).split(32)

    def padded_tokens(batches) -> int:
        return sum(int(lengths[b].max()) * len(b) for b in batches)

    print("padded tokens, bucketed", padded_tokens(bucketed), "random", padded_tokens(shuffled))
    assert padded_tokens(bucketed) < 0.75 * padded_tokens(shuffled)
    assert padded_tokens(bucketed) >= int(lengths.sum())


def _llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=32, pad_token_id=0,
    )  # fmt: skip
    return LlamaForCausalLM(config)


def _data(rows: int = 24) -> LMBatch:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 40, (rows, 12), generator=generator)
    lengths = torch.randint(4, 13, (rows,), generator=generator)
    attention = torch.arange(12)[None, :] < lengths[:, None]
    completion = attention & (torch.arange(12)[None, :] >= 3)
    return LMBatch(ids.masked_fill(~attention, 0), attention, completion)


def test_gradient_checkpointing_trains_to_the_same_weights_recomputing_each_layer():
    data = _data()
    models, calls = [], []
    for checkpointing in (False, True):
        model = _llama()
        count = [0]
        # A pre-hook: the recompute stops at the layer's last saved tensor, before a forward hook would fire.
        model.model.layers[0].self_attn.register_forward_pre_hook(lambda *_, c=count: c.__setitem__(0, c[0] + 1))
        settings = LMTrainSettings(epochs=2, batch_size=8, gradient_checkpointing=checkpointing)
        history = train_lm(model, data, data, "sft", settings)
        models.append((model, history))
        calls.append(count[0])
    (plain, plain_history), (checkpointed, checkpointed_history) = models
    assert [h["loss"] for h in checkpointed_history] == pytest.approx([h["loss"] for h in plain_history], rel=1e-5)
    for a, b in zip(plain.parameters(), checkpointed.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # 2 epochs x 3 steps; validation passes run the layer once per epoch either way. Checkpointing runs each
    # training step's forward again in the backward pass.
    assert calls[1] - calls[0] == 2 * 3
    assert not checkpointed.model.layers[
        0
    ].gradient_checkpointing  # left as it was found: the export carries no training flag


class _OutOfMemory(torch.nn.Module):
    """A model whose forward pass runs out of GPU memory."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def test_running_out_of_gpu_memory_is_cuda_oom_naming_batch_size_and_sequence_length():
    with pytest.raises(EngineError) as raised:
        train_lm(_OutOfMemory(), _data(), _data(), "sft", LMTrainSettings(epochs=1, batch_size=8))
    assert raised.value.code == "cuda_oom"
    message = raised.value.message
    assert "batch_size 8" in message and "12 tokens" in message and "lower batch_size or max_length" in message


def test_the_teacher_signal_computed_on_trimmed_batches_matches_the_padded_pass():
    from worker.engine.lm_signal import teacher_topk

    model, data = _llama().eval(), _data()
    signal = teacher_topk(model, data, k=5, temperature=2.0, batch_size=8)
    with torch.no_grad():
        logits = model(input_ids=data.ids, attention_mask=data.attention.long()).logits[:, :-1]
    reference = torch.log_softmax(logits / 2.0, -1).topk(5, -1)
    mask = signal["completion_mask"].bool()
    assert signal["indices"].shape == (24, 11, 5) and signal["log_probs"].shape == (24, 11, 6)
    assert signal["indices"].dtype == torch.int16  # a vocabulary under 32,768 tokens: half the bytes of int32
    assert torch.equal(signal["indices"][mask].long(), reference.indices[mask])
    torch.testing.assert_close(signal["log_probs"][..., :5][mask], reference.values[mask], rtol=1e-4, atol=1e-5)
    targets = torch.log_softmax(logits, -1).gather(-1, data.ids[:, 1:, None])[..., 0]
    torch.testing.assert_close(signal["target_log_probs"][mask], targets[mask], rtol=1e-4, atol=1e-5)


def test_every_token_weighs_the_same_in_length_bucketed_batches():
    from worker.engine.lm_train import mean_nll

    model, data = _llama(), _data()
    # Learning rate 0: the weights stay, so the epoch's loss is a plain function of the batches' weighting.
    history = train_lm(model, data, data, "sft", LMTrainSettings(epochs=1, batch_size=5, learning_rate=0.0))
    assert history[0]["loss"] == pytest.approx(mean_nll(model, data), rel=1e-5)  # the mean over all tokens


@pytest.mark.parametrize("method", ["sft", "forward_kl", "offline"])
def test_skipping_the_projection_of_prompt_positions_leaves_the_loss_as_it_was(method):
    from worker.engine.lm_signal import teacher_topk
    from worker.engine.lm_train import _step_loss, first_loss_position

    student, teacher, data = _llama(0), _llama(1).eval(), _data()
    signal = teacher_topk(teacher, data, k=5, temperature=1.0)
    rows = torch.arange(8)
    batch = data.rows(rows)
    skip = first_loss_position(batch)
    assert skip == 2  # the completions start at position 3: the logit at 2 is the first one learnt
    settings = LMTrainSettings()
    full = _step_loss(method, student, batch, settings, teacher, signal, rows)
    skipped = _step_loss(method, student, batch, settings, teacher, signal, rows, skip)
    torch.testing.assert_close(skipped, full, rtol=1e-5, atol=1e-6)
