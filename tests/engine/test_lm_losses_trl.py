"""Our token-level LM losses against Hugging Face TRL's GKD loss (issue 12, point 4): equal once the conventions map.

TRL 1.16.0 has it as the static method GKDTrainer.generalized_jsd_loss(student_logits, teacher_logits, labels=None,
beta=0.5, temperature=1.0, reduction="batchmean", num_items_in_batch=None), in trl/experimental/gkd/gkd_trainer.py
(import path trl.experimental.gkd; `trl.GKDTrainer` no longer exists). The mapping, checked below number for number:

- beta: the same convention, not mirrored. Both take the mixture M = beta * teacher + (1 - beta) * student and the
  loss beta * KL(teacher || M) + (1 - beta) * KL(student || M) (GKD eq. 1 with P = teacher, Q = student). Our
  jsd at beta b is TRL's beta b; our forward_kl, KL(teacher || student), is TRL's beta 0 (and our jsd at 0); our
  reverse_kl, KL(student || teacher), is TRL's beta 1 (and our jsd at 1). Both special-case the ends, where the
  mixture form itself would vanish. test_the_mirrored_beta_does_not_match shows the comparison tells b from 1 - b.
- temperature: both divide both sides' logits by T before the softmax; ours then multiplies the divergence by T^2
  (Hinton et al. 2015), TRL does not: ours = T^2 * TRL's. (GKDTrainer.compute_loss passes no temperature at all:
  its divergence is always at T = 1 and its config's temperature is only the sampling one.)
- reduction and padding: our mask true <=> TRL's labels != -100. Ours is the mean over the real tokens of the
  per-token divergence; TRL's "batchmean" with labels is the sum over the real tokens (and the vocabulary) divided by
  their count: the same per-token mean. Without labels TRL's "batchmean" divides by the batch's first dimension (the
  number of sequences), a per-sequence sum: ours over an all-true mask times the sequence length.
- dtype: ours computes in float32 whatever the logits' dtype; TRL in the logits' dtype.
- on-policy mixing: TRL's GKDTrainer.training_step replaces a batch by the student's samples with probability lmbda
  (`random.random() <= lmbda`), once per batch; our OnPolicy.next_batch does the same with on_policy_fraction
  (a seeded coin of its own, sampled when the draw is < fraction). Same semantics, lambda = on_policy_fraction; the
  differences are elsewhere: our warm_start_epochs train forward KL on the data first (TRL expects an SFT'd student),
  TRL samples at its config's temperature (0.9 by default) where we sample at 1, and TRL's seq_kd (teacher samples
  on the other batches) has no counterpart here.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from worker.engine import lm_onpolicy
from worker.engine.lm_losses import fold_onto_topk, token_kd_loss, topk_kd_loss, topk_signal
from worker.engine.lm_onpolicy import SAMPLED, OnPolicy
from worker.engine.lm_train import LMTrainSettings

pytest.importorskip("trl")
with warnings.catch_warnings():  # TRL warns on every import from trl.experimental, where GKD lives
    warnings.filterwarnings("ignore", message="You are importing from 'trl.experimental'")
    GKDTrainer = pytest.importorskip("trl.experimental.gkd").GKDTrainer

SHAPES = [(1, 4, 2), (2, 6, 17), (3, 9, 50)]
TEMPERATURES = [1.0, 2.0]
# (our objective, our beta, TRL's beta): the beta of ours that is each beta of theirs.
OBJECTIVES = [("forward_kl", 0.5, 0.0), ("reverse_kl", 0.5, 1.0), ("jsd", 0.0, 0.0), ("jsd", 1.0, 1.0)]
OBJECTIVES += [("jsd", b, b) for b in (0.1, 0.5, 0.9)]


def _case(shape: tuple[int, int, int], seed: int):
    """(student, teacher, our mask, TRL's labels): rows of prompt, completion, right padding; a third all padding."""
    gen = torch.Generator().manual_seed(seed)
    batch, length, vocab = shape
    student = torch.randn(shape, generator=gen) * 3
    teacher = torch.randn(shape, generator=gen) * 3
    mask = torch.zeros(batch, length, dtype=torch.bool)
    for row in range(batch if batch < 3 else 2):
        start = int(torch.randint(0, length // 2 + 1, (), generator=gen))
        end = int(torch.randint(start + 1, length, (), generator=gen))
        mask[row, start:end] = True
    # Huge logits where nothing is learnt: a loss that read them would be far off.
    student[~mask] = student[~mask] * 1e3
    teacher[~mask] = -teacher[~mask] * 1e3
    labels = torch.randint(0, vocab, (batch, length), generator=gen).masked_fill(~mask, -100)
    return student, teacher, mask, labels


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize(("objective", "ours", "theirs"), OBJECTIVES)
def test_token_kd_loss_is_trls_generalized_jsd_times_t_squared(shape, temperature, objective, ours, theirs):
    """token_kd_loss and its gradient equal T^2 * GKDTrainer.generalized_jsd_loss, padding and prompt masked."""
    student, teacher, mask, labels = _case(shape, seed=sum(shape))
    s_ours, s_trl = student.clone().requires_grad_(), student.clone().requires_grad_()
    loss = token_kd_loss(s_ours, teacher, mask, objective, temperature, ours)
    reference = GKDTrainer.generalized_jsd_loss(s_trl, teacher, labels, beta=theirs, temperature=temperature)
    reference = reference * temperature**2
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-6)
    loss.backward()
    reference.backward()
    torch.testing.assert_close(s_ours.grad, s_trl.grad, rtol=1e-4, atol=1e-7)
    assert float(s_ours.grad[~mask].abs().max()) == 0.0


def test_the_mirrored_beta_does_not_match():
    """The comparison tells beta from 1 - beta, and the T^2 factor from none."""
    student, teacher, mask, labels = _case((2, 6, 17), seed=1)
    ours = token_kd_loss(student, teacher, mask, "jsd", 2.0, 0.1)
    same = GKDTrainer.generalized_jsd_loss(student, teacher, labels, beta=0.1, temperature=2.0)
    mirrored = GKDTrainer.generalized_jsd_loss(student, teacher, labels, beta=0.9, temperature=2.0)
    torch.testing.assert_close(ours, same * 4)
    assert not torch.allclose(ours, mirrored * 4, rtol=1e-2)
    assert not torch.allclose(ours, same, rtol=1e-2)


@pytest.mark.parametrize(("objective", "ours", "theirs"), OBJECTIVES)
def test_padded_rows_of_minus_infinity_logits(objective, ours, theirs):
    """Padded rows of -inf logits: TRL's value and a finite gradient (TRL 1.16.0's is NaN there, see below)."""
    # TRL computes every row and masks afterwards, so the padded rows' NaNs reach its gradient as 0 * NaN.
    student, teacher, mask, labels = _case((2, 6, 17), seed=4)
    student[~mask], teacher[~mask] = float("-inf"), float("-inf")
    s = student.clone().requires_grad_()
    loss = token_kd_loss(s, teacher, mask, objective, 1.0, ours)
    torch.testing.assert_close(loss, GKDTrainer.generalized_jsd_loss(student, teacher, labels, beta=theirs))
    loss.backward()
    assert bool(s.grad.isfinite().all())


@pytest.mark.parametrize(("objective", "ours", "theirs"), OBJECTIVES)
def test_without_labels_trls_batchmean_is_per_sequence(objective, ours, theirs):
    """TRL's batchmean without labels divides by the number of sequences: ours (per token) times the length."""
    student, teacher, _, _ = _case((3, 9, 50), seed=2)
    mask = torch.ones(3, 9, dtype=torch.bool)
    loss = token_kd_loss(student, teacher, mask, objective, 1.0, ours)
    reference = GKDTrainer.generalized_jsd_loss(student, teacher, beta=theirs)
    torch.testing.assert_close(loss * 9, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize(("objective", "ours", "theirs"), OBJECTIVES)
def test_topk_kd_loss_is_trls_loss_on_the_k_plus_one_buckets(temperature, objective, ours, theirs):
    """topk_kd_loss is T^2 * TRL's loss on the k + 1 buckets (already at T), and on the logits when k is V."""
    student, teacher, mask, labels = _case((2, 6, 17), seed=3)
    indices, signal = topk_signal(teacher, 5, temperature)
    loss = topk_kd_loss(student, indices, signal, mask, objective, temperature, ours)
    # Log-probabilities are their own logits (log_softmax leaves them as they are), so TRL reads the buckets as given.
    buckets = fold_onto_topk(student, indices, temperature)
    reference = GKDTrainer.generalized_jsd_loss(buckets, signal, labels, beta=theirs) * temperature**2
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-6)

    indices, signal = topk_signal(teacher, 17, temperature)
    loss = topk_kd_loss(student, indices, signal, mask, objective, temperature, ours)
    reference = GKDTrainer.generalized_jsd_loss(student, teacher, labels, beta=theirs, temperature=temperature)
    torch.testing.assert_close(loss, reference * temperature**2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fraction", [0.0, 0.3, 1.0])
def test_on_policy_fraction_is_trls_lmbda(monkeypatch, fraction):
    """Each batch is the student's samples with probability on_policy_fraction, as with TRL's lmbda (per batch)."""
    monkeypatch.setattr(lm_onpolicy, "sample_completions", lambda student, batch, max_new_tokens, seed: batch)
    policy = OnPolicy(LMTrainSettings(on_policy_fraction=fraction, warm_start_epochs=0, seed=7), max_new_tokens=4)
    draws = 2000
    sampled = sum(policy.next_batch(None, None)[0] == SAMPLED for _ in range(draws))
    # Within 5 binomial standard deviations of lambda * draws (exact at 0 and 1).
    assert abs(sampled - fraction * draws) <= 5 * (draws * fraction * (1 - fraction)) ** 0.5
