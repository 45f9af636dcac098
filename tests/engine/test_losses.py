"""Losses against values computed by hand with plain math."""

import math

import pytest
import torch

from worker.engine.errors import EngineError
from worker.engine.losses import distillation_loss, dkd_loss, kd_loss, mse_loss, soft_kl


def softmax(values, t=1.0):
    exps = [math.exp(v / t) for v in values]
    return [e / sum(exps) for e in exps]


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


S = [1.0, 2.0, 0.5]
T_LOGITS = [2.0, 0.0, 1.0]


def tensors():
    return torch.tensor([S]), torch.tensor([T_LOGITS])


def test_kd_loss_pure_soft_targets_equals_t_squared_times_kl():
    s, t = tensors()
    expected = 4.0**2 * kl(softmax(T_LOGITS, 4.0), softmax(S, 4.0))
    assert kd_loss(s, t, torch.tensor([0]), 4.0, 1.0).item() == pytest.approx(expected, rel=1e-5)


def test_kd_loss_alpha_zero_is_cross_entropy_only():
    s, t = tensors()
    expected = -math.log(softmax(S)[1])
    assert kd_loss(s, t, torch.tensor([1]), 4.0, 0.0).item() == pytest.approx(expected, rel=1e-5)


def test_kd_loss_mixes_hard_and_soft_terms():
    s, t = tensors()
    ce = -math.log(softmax(S)[0])
    soft = 2.0**2 * kl(softmax(T_LOGITS, 2.0), softmax(S, 2.0))
    assert kd_loss(s, t, torch.tensor([0]), 2.0, 0.3).item() == pytest.approx(0.7 * ce + 0.3 * soft, rel=1e-5)


def test_kd_loss_without_labels_uses_soft_targets_only():
    s, t = tensors()
    assert kd_loss(s, t, None, 4.0, 0.5).item() == pytest.approx(kd_loss(s, t, None, 4.0, 1.0).item())
    assert kd_loss(s, t, None, 4.0, 0.5).item() == pytest.approx(soft_kl(s, t, 4.0).item())


def test_t_squared_keeps_gradient_scale_comparable_across_temperatures():
    # Hinton et al.: the soft-target gradient falls like 1/T^2, which the T^2 factor cancels, so
    # for large T the gradient tends to (s - t) / N (the logit-matching limit) whatever T is.
    grads = []
    for temperature in (20.0, 40.0):
        s = torch.tensor([[0.1, -0.2, 0.05]], requires_grad=True)
        t = torch.tensor([[0.0, 0.1, -0.1]])
        soft_kl(s, t, temperature).backward()
        grads.append(s.grad.clone())
    centred = torch.tensor([0.1, -0.2, 0.05]) - torch.tensor([0.0, 0.1, -0.1])
    expected = (centred - centred.mean()) / 3
    for grad in grads:
        assert torch.allclose(grad[0], expected, atol=2e-3)
    assert grads[0].abs().sum() > 1e-2  # without T^2 it would be ~1/400 of this


def test_mse_loss_matches_hand_value_and_mixes_ce():
    s, t = tensors()
    mse = sum((a - b) ** 2 for a, b in zip(S, T_LOGITS, strict=True)) / 3
    ce = -math.log(softmax(S)[2])
    assert mse_loss(s, t, None, 0.2).item() == pytest.approx(mse, rel=1e-5)
    assert mse_loss(s, t, torch.tensor([2]), 0.2).item() == pytest.approx(0.8 * ce + 0.2 * mse, rel=1e-5)


def hand_dkd(student, teacher, target, temperature, a, b):
    ps, pt = softmax(student, temperature), softmax(teacher, temperature)
    tckd = kl([pt[target], 1 - pt[target]], [ps[target], 1 - ps[target]])
    rest = [i for i in range(len(student)) if i != target]
    nckd = kl(softmax([teacher[i] for i in rest], temperature), softmax([student[i] for i in rest], temperature))
    return temperature**2 * (a * tckd + b * nckd)


def test_dkd_matches_hand_computed_three_class_case():
    s, t = tensors()
    expected = hand_dkd(S, T_LOGITS, 0, 2.0, 1.0, 8.0)
    assert dkd_loss(s, t, torch.tensor([0]), 2.0, 1.0, 1.0, 8.0).item() == pytest.approx(expected, rel=1e-4)
    ce = -math.log(softmax(S)[0])
    mixed = dkd_loss(s, t, torch.tensor([0]), 2.0, 0.5, 1.0, 8.0).item()
    assert mixed == pytest.approx(0.5 * ce + 0.5 * expected, rel=1e-4)


def test_dkd_without_labels_targets_the_teachers_argmax():
    s, t = tensors()
    expected = hand_dkd(S, T_LOGITS, 0, 4.0, 2.0, 3.0)  # the teacher's argmax is class 0
    assert dkd_loss(s, t, None, 4.0, 0.1, 2.0, 3.0).item() == pytest.approx(expected, rel=1e-4)


def test_soft_targets_after_mixup_are_accepted():
    s, t = tensors()
    soft = torch.tensor([[0.5, 0.5, 0.0]])
    ce = -(0.5 * math.log(softmax(S)[0]) + 0.5 * math.log(softmax(S)[1]))
    assert kd_loss(s, t, soft, 4.0, 0.0).item() == pytest.approx(ce, rel=1e-5)


def test_dkd_gives_a_confident_wrong_student_a_full_target_class_gradient():
    # The student puts all its mass on class 2 (p(target) = e^-200, 0 in float32); the teacher says class 0.
    # TCKD's gradient on the target logit is T * (p_t - b_t) * dkd_alpha: about -b_t, nowhere near 0.
    s = torch.tensor([[0.0, 0.0, 200.0]], requires_grad=True)
    t = torch.tensor([[5.0, 0.0, 0.0]])
    loss = dkd_loss(s, t, torch.tensor([0]), 1.0, 1.0, 1.0, 8.0)
    loss.backward()
    teacher_target = softmax([5.0, 0.0, 0.0])[0]
    assert math.isfinite(loss.item()) and torch.isfinite(s.grad).all()
    assert s.grad[0, 0].item() == pytest.approx(-teacher_target, rel=1e-4)


def test_distillation_loss_dispatches_by_name():
    s, t = tensors()
    y = torch.tensor([0])
    assert distillation_loss("kl", s, t, y, 2.0, 0.3).item() == pytest.approx(kd_loss(s, t, y, 2.0, 0.3).item())
    assert distillation_loss("mse", s, t, y, 2.0, 0.3).item() == pytest.approx(mse_loss(s, t, y, 0.3).item())
    dkd = dkd_loss(s, t, y, 2.0, 0.3, 2.0, 3.0).item()
    assert distillation_loss("dkd", s, t, y, 2.0, 0.3, 2.0, 3.0).item() == pytest.approx(dkd)


def test_unknown_loss_name_is_invalid_config():
    s, t = tensors()
    with pytest.raises(EngineError) as info:
        distillation_loss("hinge", s, t, None, 2.0, 0.5)
    assert info.value.code == "invalid_config" and "hinge" in info.value.message
