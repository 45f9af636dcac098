"""Way (b) of bench_engine.py at its fullest: torchdistill's own training loop (DistillationBox + KDLoss).

torchdistill needs torchvision, which does not import beside every torch build, so both are imported inside
run_distillation_box: this module imports without them, and the function raises ImportError for the caller to
fall back to torchdistill's KDLoss (or its formula) inside the tutorial loop.

The box is driven the way torchdistill's examples/torchvision/image_classification.py drives it: per epoch
pre_epoch_process, then per batch forward_process and post_forward_process (backward, optimizer step, scheduler
step), then post_epoch_process; the configuration is the dict its YAML configs load into.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)


def run_distillation_box(
    teacher: nn.Module,
    student: nn.Module,
    x_train: np.ndarray,
    y_train: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    temperature: float,
    alpha: float,
    device: str | torch.device,
) -> tuple[float, str]:
    """Train `student` in place with torchdistill's DistillationBox and KDLoss; return (samples/s, label)."""
    try:
        import torchdistill  # noqa: PLC0415
        import torchvision  # noqa: PLC0415
        from torchdistill.core.distillation import get_distillation_box  # noqa: PLC0415
    except ImportError:
        raise
    except Exception as exc:  # a torchvision built for another torch fails with RuntimeError/AttributeError
        raise ImportError(f"torchdistill does not import here: {exc!r}") from exc

    device = torch.device(device)
    num_rows = len(x_train)
    steps = epochs * math.ceil(num_rows / batch_size)
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(x_train), torch.from_numpy(y_train))
    # The benchmark's alpha weights the KL term (alpha * T^2 * KL + (1 - alpha) * CE); KDLoss's alpha weights
    # CE and its beta the KL term, so they are swapped here to train on the same loss as loops (a) and (c).
    kd_alpha, kd_beta = 1.0 - alpha, alpha
    # KDLoss returns the bare KL (no beta, no T^2) when its alpha is 0: the term's weight puts them back.
    term_weight = kd_beta * temperature**2 if kd_alpha == 0 else 1.0
    train_config = {
        "num_epochs": epochs,
        "train_data_loader": {
            "dataset_id": "train",
            # Shuffled with a seeded generator like loop (a); workers stay 0 because a 2-core CPU has none to spare.
            "sampler": {
                "class_or_func": torch.utils.data.RandomSampler,
                "kwargs": {"generator": torch.Generator().manual_seed(0)},
            },
            "kwargs": {"batch_size": batch_size, "num_workers": 0, "drop_last": False},
        },
        # forward_proc has no default in torchdistill 1.x (None is not a registered key).
        "teacher": {"forward_proc": "forward_batch_only", "requires_grad": False},
        "student": {"forward_proc": "forward_batch_only", "requires_grad": True},
        "optimizer": {"key": "Adam", "kwargs": {"lr": learning_rate}},
        # scheduling_step 1: the box steps the scheduler after every optimizer step, as loops (a) and (c) do.
        "scheduler": {"key": "CosineAnnealingLR", "kwargs": {"T_max": steps}, "scheduling_step": 1},
        "criterion": {
            "key": "WeightedSumLoss",
            "kwargs": {
                "sub_terms": {
                    "kd": {
                        "criterion": {
                            "key": "KDLoss",
                            "kwargs": {
                                "student_module_path": ".",
                                "student_module_io": "output",
                                "teacher_module_path": ".",
                                "teacher_module_io": "output",
                                "temperature": temperature,
                                "alpha": kd_alpha,
                                "beta": kd_beta,
                                # batchmean KL; KDLoss then takes the mean cross-entropy.
                                "reduction": "batchmean",
                            },
                        },
                        "weight": term_weight,
                    }
                }
            },
        },
    }
    # The box freezes the teacher and clean_modules() unfreezes every parameter of both models afterwards:
    # remember the caller's flags to put them back.
    teacher_flags = [p.requires_grad for p in teacher.parameters()]
    student_flags = [p.requires_grad for p in student.parameters()]
    box = get_distillation_box(
        teacher, student, {"train": dataset}, train_config, device, None, distributed=False, lr_factor=1
    )
    seen = 0
    try:
        _sync(device)
        start = time.perf_counter()
        for epoch in range(box.num_epochs):
            box.pre_epoch_process(epoch=epoch)
            losses = []
            for sample_batch, targets, supp_dict in box.train_data_loader:
                sample_batch, targets = sample_batch.to(device), targets.to(device)
                loss = box.forward_process(sample_batch, targets, supp_dict)
                box.post_forward_process(loss=loss)
                # The example scripts read the loss every step (their metric logger and NaN check); so does (a).
                losses.append(loss.item())
                seen += len(sample_batch)
            box.post_epoch_process()
            logger.info(
                "torchdistill box epoch %d: mean loss %.4f, lr %.3g",
                epoch + 1,
                sum(losses) / max(len(losses), 1),
                box.optimizer.param_groups[0]["lr"],
            )
        _sync(device)
        elapsed = time.perf_counter() - start
    finally:
        box.clean_modules()
        for p, flag in zip(teacher.parameters(), teacher_flags, strict=True):
            p.requires_grad_(flag)
        for p, flag in zip(student.parameters(), student_flags, strict=True):
            p.requires_grad_(flag)
    label = (
        f"torchdistill {torchdistill.__version__} DistillationBox + KDLoss "
        f"(its training loop; torchvision {torchvision.__version__})"
    )
    return seen / elapsed, label


def _sync(device: torch.device) -> None:
    # CUDA runs asynchronously: without a synchronize the clock would stop before the GPU work does.
    if device.type == "cuda":
        torch.cuda.synchronize(device)
