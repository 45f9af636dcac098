"""Token-level LM distillation losses (issue 12, points 3 and 5): against an independent float64 reference, and
the three guards, each shown failing in the naive implementation they rule out."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from worker.engine.lm_losses import fold_onto_topk, token_kd_loss, topk_kd_loss, topk_signal


def _softmax64(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = logits.astype(np.float64) / temperature
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _kl64(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) in probability space, summed term by term (0 log 0 = 0)."""
    return float(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0))


def _reference(student, teacher, mask, objective, temperature, beta) -> float:
    """GKD's eq. 1 written out per token in float64 (beta 0 forward KL, 1 reverse KL, as TRL does)."""
    total, count = 0.0, 0
    for s_row, t_row, real in zip(student.reshape(-1, student.shape[-1]), teacher.reshape(-1, teacher.shape[-1]),
                                  mask.reshape(-1), strict=True):  # fmt: skip
        if not real:
            continue
        q, p = _softmax64(s_row, temperature), _softmax64(t_row, temperature)
        if objective == "forward_kl" or (objective == "jsd" and beta == 0):
            value = _kl64(p, q)
        elif objective == "reverse_kl" or (objective == "jsd" and beta == 1):
            value = _kl64(q, p)
        else:
            m = beta * p + (1 - beta) * q
            value = beta * _kl64(p, m) + (1 - beta) * _kl64(q, m)
        total += value
        count += 1
    return total / count * temperature**2


CASES = [
    ("forward_kl", 1.0, 0.5), ("forward_kl", 2.0, 0.5), ("reverse_kl", 1.0, 0.5), ("reverse_kl", 3.0, 0.5),
    ("jsd", 1.0, 0.0), ("jsd", 1.0, 0.1), ("jsd", 1.0, 0.5), ("jsd", 2.0, 0.9), ("jsd", 1.0, 1.0),
]  # fmt: skip


@pytest.mark.parametrize(("objective", "temperature", "beta"), CASES)
def test_token_losses_match_a_float64_reference_on_random_cases(objective, temperature, beta):
    rng = np.random.default_rng(hash((objective, temperature, beta)) % 2**32)
    for _ in range(3):
        batch, length, vocab = rng.integers(1, 4), rng.integers(2, 9), rng.integers(3, 40)
        scale = rng.choice([0.5, 3.0, 8.0])  # peaked distributions too
        student = rng.normal(size=(batch, length, vocab)) * scale
        teacher = rng.normal(size=(batch, length, vocab)) * scale
        mask = rng.random((batch, length)) < 0.7
        mask[0, 0] = True
        got = token_kd_loss(
            torch.tensor(student, dtype=torch.float32), torch.tensor(teacher, dtype=torch.float32),
            torch.tensor(mask), objective, temperature, beta,
        )  # fmt: skip
        want = _reference(student, teacher, mask, objective, temperature, beta)
        assert float(got) == pytest.approx(want, rel=1e-4, abs=1e-5)


def test_the_jsd_tends_to_forward_and_reverse_kl_at_its_ends_as_gkd_defines_it():
    torch.manual_seed(0)
    s, t, mask = torch.randn(2, 5, 11), torch.randn(2, 5, 11), torch.ones(2, 5, dtype=torch.bool)
    forward, reverse = token_kd_loss(s, t, mask, "forward_kl"), token_kd_loss(s, t, mask, "reverse_kl")
    assert float(token_kd_loss(s, t, mask, "jsd", beta=0.0)) == pytest.approx(float(forward))
    assert float(token_kd_loss(s, t, mask, "jsd", beta=1.0)) == pytest.approx(float(reverse))
    # Near the ends the mixture form, divided by beta (or 1 - beta), approaches the two KLs.
    assert float(token_kd_loss(s, t, mask, "jsd", beta=1e-4)) / 1e-4 == pytest.approx(float(forward), rel=1e-2)
    assert float(token_kd_loss(s, t, mask, "jsd", beta=1 - 1e-4)) / 1e-4 == pytest.approx(float(reverse), rel=1e-2)


def test_padding_is_not_counted_in_the_loss():
    torch.manual_seed(1)
    s, t = torch.randn(1, 4, 9), torch.randn(1, 4, 9)
    alone = token_kd_loss(s, t, torch.ones(1, 4, dtype=torch.bool))
    # The same sequence with six padded positions after it, whose logits are anything at all.
    padded_s = torch.cat([s, torch.randn(1, 6, 9) * 5], dim=1)
    padded_t = torch.cat([t, torch.randn(1, 6, 9) * 5], dim=1)
    mask = torch.tensor([[True] * 4 + [False] * 6])
    assert float(token_kd_loss(padded_s, padded_t, mask)) == pytest.approx(float(alone), rel=1e-6)
    # The naive form (zero the padded terms, then average over every position) dilutes the loss by the padding.
    per_token = F.kl_div(F.log_softmax(padded_s, -1), F.log_softmax(padded_t, -1), reduction="none", log_target=True)
    naive = (per_token.sum(-1) * mask).mean()
    assert float(naive) != pytest.approx(float(alone), rel=1e-2)


def test_reverse_kl_stays_finite_on_padded_positions_with_minus_infinity_logits():
    torch.manual_seed(2)
    s = torch.randn(2, 6, 8)
    t = torch.randn(2, 6, 8)
    mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    t[1, 3:] = float("-inf")  # a teacher that masks padded positions out entirely
    s[1, 3:] = float("-inf")
    s.requires_grad_(True)
    for objective in ("reverse_kl", "forward_kl", "jsd"):
        loss = token_kd_loss(s, t, mask, objective)
        (grad,) = torch.autograd.grad(loss, s)
        assert torch.isfinite(loss), objective
        assert torch.isfinite(grad).all(), objective
        assert float(grad[1, 3:].abs().sum()) == 0.0
    # The naive form computes every position and masks afterwards: the padded rows are NaN, and NaN * 0 is NaN.
    log_s, log_t = F.log_softmax(s, -1), F.log_softmax(t, -1)
    naive = ((log_s.exp() * (log_s - log_t)).sum(-1) * mask).sum() / mask.sum()
    assert torch.isnan(naive)


def test_a_token_of_zero_probability_contributes_nothing_rather_than_nan():
    s = torch.tensor([[[0.0, 1.0, float("-inf")]]], requires_grad=True)
    t = torch.tensor([[[0.5, 0.2, float("-inf")]]])
    mask = torch.ones(1, 1, dtype=torch.bool)
    for objective in ("reverse_kl", "forward_kl", "jsd"):
        loss = token_kd_loss(s, t, mask, objective)
        (grad,) = torch.autograd.grad(loss, s)
        assert torch.isfinite(loss) and torch.isfinite(grad).all(), objective
    want = _reference(np.array([[[0.0, 1.0]]]), np.array([[[0.5, 0.2]]]), np.ones((1, 1), bool), "reverse_kl", 1, 0)
    assert float(token_kd_loss(s, t, mask, "reverse_kl").detach()) == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("objective", ["forward_kl", "reverse_kl", "jsd"])
def test_the_top_k_signal_with_its_tail_is_exact_at_full_k_and_a_lower_bound_below(objective):
    torch.manual_seed(3)
    s, t = torch.randn(2, 5, 30) * 2, torch.randn(2, 5, 30) * 2
    mask = torch.tensor([[True] * 5, [True] * 2 + [False] * 3])
    full = float(token_kd_loss(s, t, mask, objective, temperature=2.0))
    idx, lp = topk_signal(t, 30, temperature=2.0)
    assert float(topk_kd_loss(s, idx, lp, mask, objective, temperature=2.0)) == pytest.approx(full, rel=1e-5)
    previous = 0.0
    for k in (1, 4, 16, 29):
        idx, lp = topk_signal(t, k, temperature=2.0)
        assert torch.allclose(lp.exp().sum(-1), torch.ones(2, 5), atol=1e-5)  # k + 1 buckets: a distribution
        assert torch.allclose(fold_onto_topk(s, idx, 2.0).exp().sum(-1), torch.ones(2, 5), atol=1e-5)
        value = float(topk_kd_loss(s, idx, lp, mask, objective, temperature=2.0))
        # Coarser buckets can only lose information (data-processing inequality), and more buckets recover it.
        assert 0.0 <= value <= full + 1e-5
        assert value >= previous - 1e-5
        previous = value


def test_a_top_k_signal_is_never_normalised_against_the_full_student_distribution():
    torch.manual_seed(4)
    t = torch.randn(3, 7, 50) * 3
    mask = torch.ones(3, 7, dtype=torch.bool)
    idx, lp = topk_signal(t, 5)
    # A student identical to the teacher is at distance zero from the teacher's signal, whatever k.
    assert float(topk_kd_loss(t.clone(), idx, lp, mask)) == pytest.approx(0.0, abs=1e-6)
    # The naive form renormalises the teacher over its top-k and compares it with the student's full-softmax
    # probabilities at those indices: two different normalisations, so even the teacher itself is "far".
    teacher_topk = F.log_softmax(t.gather(-1, idx), dim=-1)
    student_at_topk = F.log_softmax(t, dim=-1).gather(-1, idx)
    naive = (teacher_topk.exp() * (teacher_topk - student_at_topk)).sum(-1).mean()
    assert float(naive) > 0.05


def test_the_teacher_tail_is_accurate_whether_the_top_k_hold_little_or_nearly_all_the_mass():
    """The signal's tail takes log1p(-top-k mass) where the tail is large and the exact logsumexp where the top-k
    hold nearly everything (there 1 - mass in float32 rounding would be mostly noise)."""
    torch.manual_seed(5)
    t = torch.randn(4, 200)
    t[1, :5] = 16.0  # the top 5 hold all but ~4e-6 of the mass
    t[2, :5] = torch.tensor([8.0, 7.5, 7.0, 6.5, 6.0])  # the tail just above the fast path's threshold
    t[3, :5] = 12.0  # the tail ~1e-4: the exact path
    idx, lp = topk_signal(t, 5)
    log_probs = torch.log_softmax(t.double(), -1)
    exact = torch.logsumexp(log_probs.scatter(-1, idx, float("-inf")), -1)
    # float32 rounding of the log-probs alone: 1 - mass would be off by 2e-5 at row 3 and by far more at row 1.
    assert torch.allclose(lp[:, -1].double(), exact, rtol=5e-6, atol=0), (lp[:, -1], exact)
    assert float(exact[1]) < math.log(1e-5) and float(exact[3]) < math.log(1e-3) < float(exact[2])
