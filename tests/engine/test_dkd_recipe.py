"""The DKD paper's recipe as an option: CE at weight 1, plus DKD ramped in over the first part of training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from contract import LOSSES
from contract.losses import DKD_WARMUP_FRACTION
from worker.engine.losses import distillation_loss, dkd_loss


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(16, 5, generator=g), torch.randn(16, 5, generator=g) * 3
    return s, t, torch.randint(5, (16,), generator=g)


def test_dkd_paper_is_a_contract_loss_name():
    assert "dkd_paper" in LOSSES


@pytest.mark.parametrize("progress, warm", [(0.0, 0.0), (DKD_WARMUP_FRACTION / 2, 0.5), (0.5, 1.0), (1.0, 1.0)])
def test_dkd_paper_is_ce_at_weight_one_plus_warmed_up_dkd(progress, warm):
    s, t, y = _batch()
    # alpha would down-weight CE in plain "dkd"; the paper's recipe ignores it.
    got = distillation_loss("dkd_paper", s, t, y, 4.0, 0.9, 1.0, 8.0, progress)
    expected = F.cross_entropy(s, y) + warm * dkd_loss(s, t, y, 4.0, 1.0, 1.0, 8.0)
    torch.testing.assert_close(got, expected)


def test_dkd_paper_differs_from_plain_dkd_with_alpha():
    s, t, y = _batch(1)
    plain = distillation_loss("dkd", s, t, y, 4.0, 0.9, 1.0, 8.0)
    paper = distillation_loss("dkd_paper", s, t, y, 4.0, 0.9, 1.0, 8.0, 1.0)
    assert not torch.allclose(plain, paper)


def test_dkd_paper_without_labels_is_the_warmed_dkd_term_only():
    s, t, _ = _batch(2)
    got = distillation_loss("dkd_paper", s, t, None, 4.0, 0.9, 1.0, 8.0, DKD_WARMUP_FRACTION / 4)
    torch.testing.assert_close(got, 0.25 * dkd_loss(s, t, None, 4.0, 1.0, 1.0, 8.0))


def test_dkd_paper_warmup_reaches_the_student_through_the_loop(monkeypatch, tmp_path, teacher_path, train_spec):
    """The loop passes the fraction of training done: early steps see a small DKD weight, late ones the full one."""
    from worker.engine import DistillConfig, distill
    from worker.engine import losses as engine_losses

    seen: list[float] = []
    real = engine_losses.LOSSES["dkd_paper"]

    def spy(s, t, y, temperature, alpha, dkd_alpha, dkd_beta, progress):
        seen.append(progress)
        return real(s, t, y, temperature, alpha, dkd_alpha, dkd_beta, progress)

    monkeypatch.setitem(engine_losses.LOSSES, "dkd_paper", spy)
    config = DistillConfig(epochs=2, loss="dkd_paper", export=["torchscript"], recipe="plain")
    distill(teacher_path, train_spec, None, config, str(tmp_path))
    assert seen[0] == 0.0 and seen[-1] > 0.9 and seen == sorted(seen)
