"""Engine benchmark: the same distillation three ways, on the same data, with samples/s and accuracy.

    .venv/bin/python tests/benchmarks/bench_engine.py            # full sizes (meant for a CUDA GPU)
    .venv/bin/python tests/benchmarks/bench_engine.py --quick    # reduced sizes for a CPU
    .venv/bin/python tests/benchmarks/bench_engine.py --quick --workload text
    .venv/bin/python tests/benchmarks/bench_engine.py --quick --threads 1   # steadier on a shared CPU
    .venv/bin/python tests/benchmarks/bench_engine.py --quick --workload lm  # causal LM: tests/benchmarks/bench_lm.py

(a) tutorial: the plain loop a tutorial writes: fp32, the teacher's forward pass at every step, Hinton's
    loss written out, loss.item() every step.
(b) torchdistill: its own training loop, DistillationBox with KDLoss (tests/benchmarks/torchdistill_box.py),
    where torchdistill and torchvision import; else torchdistill's KDLoss inside loop (a); else its formula
    (alpha * T^2 * KL + (1 - alpha) * CE in our alpha) inside loop (a). The output says which ran. Where
    torchvision does not import beside the project's torch (the CPU build of 2.13.0), a second venv runs it:
        python3 -m venv /tmp/tdvenv && /tmp/tdvenv/bin/pip install torch==2.14.1 torchvision==0.29.1
        /tmp/tdvenv/bin/pip install --no-deps torchdistill && /tmp/tdvenv/bin/pip install -e .
        /tmp/tdvenv/bin/python tests/benchmarks/bench_engine.py --quick
(c) engine: worker.engine.distill() (cached teacher outputs, bf16 on CUDA, data on the device, no per-step
    sync, length bucketing for text), timed by phase from its progress events: the teacher-outputs pass plus
    the training phase is the figure the ratios use; first epoch and epochs after the first are shown apart.
    Plus the engine's loop training the student alone (no teacher term, alpha = 0), the ceiling that cached
    teacher outputs approach.
(a-aug) augmented KD, the tutorial loop: loop (a) with the engine's own augment_batch at the settings the auto
    recipe picks for the data (mixup and noise for images, token dropout for text), the teacher's forward pass
    on every augmented batch, every step; temperature 3 and alpha 0.8 (see (c-aug)).
(c-aug) augmented KD, the engine: distill() under the auto recipe with epochs, learning rate, temperature and
    alpha named (values other than the plain defaults are kept, so nothing is searched and the schedule is the
    tutorial's), run twice on one teacher cache folder. The cold job runs the teacher on every augmented batch
    and stores its outputs (worker/engine/augmented_cache.py); the warm job, a later job on the same teacher,
    data and settings, reads them: no teacher forward pass on augmented data. The figure is the clean teacher
    pass plus the student's training (validation included); the labels-only baseline that the auto recipe
    trains on labelled data, evaluation and export are printed apart and not counted. Ratios for both caches.
    tests/benchmarks/bench_augmented.py holds these rows; --ways plain|augmented runs one group only.

Workloads: images (digits resized to 32x32 with 3 channels; a ResNet-style teacher, about 20M parameters
at full size and 309k with --quick (--teacher-width 8 gives the 78k one of earlier runs, cheaper than its
student), into the engine's small CNN) and text (tests/support/text.py's corpus: an LSTM teacher into
an LSTM 64/64). Every way trains the same student architecture from the same initial weights for the same
epochs, batch size, learning rate, temperature and alpha; accuracies are on the same held-out split. The
engine holds 10% of train out for choosing its best epoch, so it trains on 90% of the rows; samples/s are
per training example processed. Prints figures and ratios; asserts nothing about timing.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks.bench_augmented import augmented_rows  # noqa: E402
from tests.benchmarks.torchdistill_box import run_distillation_box  # noqa: E402
from tests.support import digits  # noqa: E402
from worker.engine import DatasetSpec, DistillConfig, distill  # noqa: E402
from worker.engine.loop import Split, train_student  # noqa: E402
from worker.engine.students import build_student  # noqa: E402

warnings.filterwarnings("ignore")


@dataclass
class Workload:
    name: str
    teacher_path: Path
    teacher: nn.Module  # TorchScript, eval mode, on the device
    train_spec: DatasetSpec
    eval_spec: DatasetSpec
    x_train: np.ndarray
    y_train: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray
    student: dict
    epochs: int
    batch_size: int
    learning_rate: float
    num_classes: int
    vocab_size: int | None = None
    pad_id: int | None = None


# ----------------------------------------------------------------------------------------------- images


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.short(x))


class ResNet(nn.Module):
    """ResNet-34-style for 32x32 inputs: blocks (3, 4, 6, 3), widths width * (1, 2, 4, 8)."""

    def __init__(self, width: int, blocks: tuple[int, ...], num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        layers, cin = [], width
        for i, n in enumerate(blocks):
            cout = width * 2**i
            for j in range(n):
                layers.append(BasicBlock(cin, cout, 2 if (j == 0 and i > 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.head(F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1).flatten(1))


def to_images(x: np.ndarray) -> np.ndarray:
    """8x8 digits -> [N, 3, 32, 32] float32 (bilinear upsampling, grey copied to three channels)."""
    t = F.interpolate(torch.from_numpy(x).view(-1, 1, 8, 8), size=32, mode="bilinear", align_corners=False)
    return t.repeat(1, 3, 1, 1).numpy().astype(np.float32)


def image_workload(quick: bool, device: str, work: Path, teacher_width: int | None = None) -> Workload:
    x_train, y_train, x_eval, y_eval = digits.digits_arrays()
    x_train, x_eval = to_images(x_train), to_images(x_eval)
    if not quick:  # a bigger transfer set: the digits four times, shifted by a pixel each way
        shifted = [np.roll(x_train, s, axis=a) for s, a in ((1, 2), (-1, 2), (1, 3))]
        x_train, y_train = np.concatenate([x_train, *shifted]), np.tile(y_train, 4)
    # Quick: width 16 (309k parameters, 13 times the student's), so that the teacher costs more than a
    # student step, as any teacher worth distilling does; width 8 (78k) cost less per batch than one training
    # step of its own student.
    width, blocks = (16, (1, 1, 1, 1)) if quick else (64, (3, 4, 6, 3))
    width = teacher_width or width
    torch.manual_seed(0)
    teacher = ResNet(width, blocks).to(device)
    train_plain(teacher, x_train, y_train, epochs=3 if quick else 8, batch_size=64 if quick else 256, device=device)
    path = save_script(teacher, work / "image_teacher.pt")
    return Workload(
        "images",
        path,
        load_script(path, device),
        DatasetSpec(str(digits.write_npz(work / "img_train.npz", x_train, y_train)), "npz"),
        DatasetSpec(str(digits.write_npz(work / "img_eval.npz", x_eval, y_eval)), "npz"),
        x_train,
        y_train,
        x_eval,
        y_eval,
        {"architecture": "cnn", "channels": [16, 32, 64] if quick else [32, 64, 128]},
        epochs=20,
        batch_size=64 if quick else 512,
        learning_rate=0.01,
        num_classes=10,
    )


# ------------------------------------------------------------------------------------------------- text


def text_workload(quick: bool, device: str, work: Path) -> Workload:
    from tests.support.text import make_text_fixture, train_lstm_teacher
    from worker.engine.data import load_dataset

    out = work / "text"
    make_text_fixture(out, n_train=3000 if quick else 50_000, n_eval=600 if quick else 5000)
    emb, hidden = (64, 96) if quick else (128, 256)
    path = train_lstm_teacher(out, epochs=2 if quick else 4, embedding_dim=emb, hidden_dim=hidden)

    def spec(name):
        return DatasetSpec(
            str(out / name),
            "csv",
            text_column="text",
            label_column="label",
            tokenizer_path=str(out / "tokenizer.json"),
            max_length=32,
        )

    train, evaluation = load_dataset(spec("train.csv")), load_dataset(spec("eval.csv"))
    return Workload(
        "text",
        path,
        load_script(path, device),
        spec("train.csv"),
        spec("eval.csv"),
        train.x,
        train.y,
        evaluation.x,
        evaluation.y,
        {"architecture": "lstm", "embedding_dim": 64, "hidden_dim": 64},
        epochs=8 if quick else 10,
        batch_size=64 if quick else 256,
        learning_rate=0.01,
        num_classes=len(train.classes),
        vocab_size=train.text_info["vocab_size"],
        pad_id=train.pad_id,
    )


# -------------------------------------------------------------------------------------------- the loops


def save_script(model: nn.Module, path: Path) -> Path:
    model = model.eval().cpu()
    torch.jit.save(torch.jit.script(model), str(path))
    return path


def load_script(path: Path, device: str) -> nn.Module:
    return torch.jit.load(str(path), map_location=device).eval()


def train_plain(model, x, y, epochs, batch_size, device, lr=2e-3):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(batch_size):
            opt.zero_grad()
            F.cross_entropy(model(xt[idx.to(device)]), yt[idx.to(device)]).backward()
            opt.step()
    model.eval()


def new_student(w: Workload, device: str) -> nn.Module:
    torch.manual_seed(0)
    shape = list(w.x_train.shape[1:])
    return build_student(w.student, shape, str(w.x_train.dtype), w.num_classes, w.vocab_size, w.pad_id).to(device)


def tutorial_kd(s, t, y, temperature, alpha):
    soft = F.kl_div(F.log_softmax(s / temperature, 1), F.softmax(t / temperature, 1), reduction="batchmean")
    return alpha * soft * temperature**2 + (1 - alpha) * F.cross_entropy(s, y)


def torchdistill_loss():
    """torchdistill's KDLoss when importable, else the same formula; and which one it is."""
    try:
        from torchdistill.losses.mid_level import KDLoss  # noqa: PLC0415

        def loss(s, t, y, temperature, alpha):
            # torchdistill's alpha weighs the cross-entropy and beta the T^2-scaled KL: the reverse of ours.
            kd = KDLoss(".", "output", ".", "output", temperature=temperature, alpha=1 - alpha, beta=alpha)
            return kd({".": {"output": s}}, {".": {"output": t}}, y)

        return loss, "torchdistill KDLoss in loop (a)"
    except Exception:  # not installed, or another version's signature
        return tutorial_kd, "KDLoss-equivalent in loop (a) (torchdistill not importable)"


def run_b(w: Workload, device: str, temperature=4.0, alpha=0.9) -> tuple[float, float, str]:
    """(samples/s, eval accuracy, what ran) of way (b): torchdistill's DistillationBox, else its KDLoss in (a)."""
    try:
        student = new_student(w, device)
        speed, label = run_distillation_box(
            w.teacher,
            student,
            w.x_train,
            w.y_train,
            epochs=w.epochs,
            batch_size=w.batch_size,
            learning_rate=w.learning_rate,
            temperature=temperature,
            alpha=alpha,
            device=device,
        )
        return speed, accuracy(student, w, device), label
    except ImportError as exc:
        loss_b, label = torchdistill_loss()
        speed, acc = run_loop(w, device, loss_b, temperature, alpha)
        return speed, acc, f"{label}; DistillationBox not run: {exc}"


def run_loop(w: Workload, device: str, loss_fn, temperature=4.0, alpha=0.9) -> tuple[float, float]:
    """(samples/s, eval accuracy) of the tutorial loop: fp32, teacher every step, .item() every step."""
    student = new_student(w, device)
    opt = torch.optim.Adam(student.parameters(), lr=w.learning_rate)
    x, y = torch.from_numpy(w.x_train), torch.from_numpy(w.y_train)
    # The same learning-rate budget as the engine (cosine decay over the run): without it the constant rate
    # leaves the tutorial loop short of the engine's accuracy, and a speed ratio at unequal accuracy is void.
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=w.epochs * math.ceil(len(x) / w.batch_size))
    gen = torch.Generator().manual_seed(0)
    seen, losses = 0, []
    sync(device)
    start = time.perf_counter()
    for _ in range(w.epochs):
        student.train()
        for idx in torch.randperm(len(x), generator=gen).split(w.batch_size):
            xb, yb = x[idx].to(device), y[idx].to(device)
            with torch.no_grad():
                t = w.teacher(xb)
            loss = loss_fn(student(xb), t, yb, temperature, alpha)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            seen += len(idx)
    sync(device)
    elapsed = time.perf_counter() - start
    return seen / elapsed, accuracy(student, w, device)


@torch.no_grad()
def accuracy(model, w: Workload, device: str) -> float:
    model.eval()
    x = torch.from_numpy(w.x_eval)
    pred = torch.cat([model(x[i : i + 512].to(device)).argmax(1).cpu() for i in range(0, len(x), 512)])
    return float((pred.numpy() == w.y_eval).mean())


@dataclass
class EngineRun:
    """worker.engine.distill() timed by phase from its progress events (samples/s are training examples)."""

    teacher_pass: float  # the teacher's outputs over the training rows, once (cache miss)
    training: float  # the training phase: all epochs, validation included
    first_epoch: float
    later_epochs: float  # epochs after the first: what every epoch costs once the teacher's outputs exist
    job: float  # teacher pass + training: the figure the ratios use
    end_to_end: float  # everything distill() does: loading, teacher, training, evaluation, exports
    accuracy: float
    report: dict


def run_engine(w: Workload, device: str, work: Path) -> EngineRun:
    """Run worker.engine.distill() once and time its phases."""
    config = DistillConfig.from_dict(
        {
            "student": w.student,
            "recipe": "plain",  # the same training as the tutorial loop: no search, no baseline
            "epochs": w.epochs,
            "batch_size": w.batch_size,
            "learning_rate": w.learning_rate,
            "temperature": 4.0,
            "alpha": 0.9,
            "export": ["torchscript"],
            "device": device,
        }
    )
    marks: dict[str, float] = {}
    epoch_ends: list[float] = []

    def progress(event):
        # Each epoch's metrics event follows its validation pass, which reads results to the host: a sync point.
        if event.type == "phase":
            marks[event.data["phase"]] = time.perf_counter()
        elif event.type == "metrics":
            epoch_ends.append(time.perf_counter())

    start = time.perf_counter()
    report = distill(
        str(w.teacher_path), w.train_spec, w.eval_spec, config, str(work / f"out-{w.name}"), progress=progress
    )
    total = time.perf_counter() - start
    n_train = len(w.x_train)
    trained = math.ceil(0.9 * n_train)  # per epoch: the engine trains on train minus its 10% slice
    teacher_s = marks["training"] - marks["teacher_outputs"]
    train_s = epoch_ends[-1] - marks["training"]
    first_s = epoch_ends[0] - marks["training"]
    later = [b - a for a, b in zip(epoch_ends, epoch_ends[1:], strict=False)]
    return EngineRun(
        teacher_pass=n_train / teacher_s,
        training=len(epoch_ends) * trained / train_s,
        first_epoch=trained / first_s,
        later_epochs=len(later) * trained / sum(later) if later else float("nan"),
        job=len(epoch_ends) * trained / (teacher_s + train_s),
        end_to_end=len(epoch_ends) * trained / total,
        accuracy=report["student"]["accuracy"],
        report=report,
    )


def run_student_alone(w: Workload, device: str, bucketing: bool = True) -> float:
    """Samples/s of the engine's loop training the student with no teacher term (alpha = 0).

    bucketing=False trains on full padded rows (no pad id given: no length bucketing, no trimming).
    """
    student = new_student(w, device)
    x, y = torch.from_numpy(w.x_train), torch.from_numpy(w.y_train)
    n = len(x) - len(x) // 10
    logits = torch.zeros(len(x), w.num_classes)
    train = Split(x[:n].to(device), y[:n].to(device), logits[:n].to(device))
    val = Split(x[n:].to(device), y[n:].to(device), logits[n:].to(device))
    config = DistillConfig.from_dict(
        {
            "student": w.student,
            "epochs": w.epochs,
            "batch_size": w.batch_size,
            "learning_rate": w.learning_rate,
            "device": device,
        }
    )
    sync(device)
    start = time.perf_counter()
    train_student(
        student,
        train,
        val,
        config,
        alpha=0.0,
        num_classes=w.num_classes,
        device=device,
        pad_id=w.pad_id if bucketing else None,
    )
    sync(device)
    return w.epochs * n / (time.perf_counter() - start)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes, for a CPU")
    parser.add_argument("--workload", choices=["images", "text", "both", "lm"], default="both")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int, default=None, help="override the workload's epochs")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--ways", choices=["all", "plain", "augmented"], default="all", help="rows to run")
    parser.add_argument(
        "--teacher-width", type=int, default=None, help="the image teacher's base width (default 16 quick, 64 full)"
    )
    args = parser.parse_args()
    if args.workload == "lm":  # its own ways and figures (tokens/s, perplexity): tests/benchmarks/bench_lm.py
        from tests.benchmarks.bench_lm import main as lm_main

        lm_main([a for a in sys.argv[1:] if not a.startswith("--workload") and a != "lm"])
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    python = os.path.relpath(sys.executable) if sys.executable.startswith(str(ROOT)) else sys.executable
    print("command:", shlex.join([python, "tests/benchmarks/bench_engine.py", *sys.argv[1:]]))
    device_name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(
        f"device: {args.device} ({device_name}), torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, {'quick' if args.quick else 'full'} sizes; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other work on the CPU makes every figure noisy)"
    )
    work = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    workloads = ["images", "text"] if args.workload == "both" else [args.workload]
    rows, augmented = [], []
    for name in workloads:
        t0 = time.perf_counter()
        if name == "images":
            w = image_workload(args.quick, args.device, work, args.teacher_width)
        else:
            w = text_workload(args.quick, args.device, work)
        w.epochs = args.epochs or w.epochs
        teacher_params = sum(p.numel() for p in w.teacher.parameters())
        student_params = sum(p.numel() for p in new_student(w, "cpu").parameters())
        print(
            f"\n== {name}: teacher {teacher_params:,} parameters, student {student_params:,}; "
            f"{len(w.x_train)} train / {len(w.x_eval)} eval rows, input {list(w.x_train.shape[1:])}, "
            f"{w.epochs} epochs, batch {w.batch_size} (setup {time.perf_counter() - t0:.0f} s)"
        )
        # Untimed: the first passes pay for kernel selection and allocator growth; whichever way ran first
        # would otherwise carry that cost alone.
        run_loop(
            replace(w, x_train=w.x_train[: 4 * w.batch_size], y_train=w.y_train[: 4 * w.batch_size], epochs=1),
            args.device,
            tutorial_kd,
        )
        if args.ways in ("all", "plain"):
            rows.append((name, *plain_rows(w, args.device, work)))
        if args.ways in ("all", "augmented"):
            augmented.append((name, *augmented_rows(w, args.device, work, new_student, accuracy, tutorial_kd)))
    print_tables(rows, augmented)


def plain_rows(w: Workload, device: str, work: Path) -> tuple[float, ...]:
    """Run (a), (b), (c) and the student alone; print their rows; the figures of the summary table."""
    a_speed, a_acc = run_loop(w, device, tutorial_kd)
    b_speed, b_acc, label_b = run_b(w, device)
    print(f"(b) ran: {label_b}")
    c = run_engine(w, device, work)
    c_speed, c_acc = c.job, c.accuracy
    ceiling = run_student_alone(w, device)
    padded = run_student_alone(w, device, bucketing=False) if w.pad_id is not None else None
    teacher_acc = c.report["teacher"]["accuracy"]
    print(f"{'way':<52}{'samples/s':>12}{'accuracy':>10}")
    print(f"{'(a) tutorial loop (fp32, teacher every step)':<52}{a_speed:>12,.0f}{a_acc:>10.3f}")
    print(f"{'(b) ' + label_b.split(' (')[0]:<52}{b_speed:>12,.0f}{b_acc:>10.3f}")
    print(f"{'(c) engine: teacher pass + training (the job)':<52}{c_speed:>12,.0f}{c_acc:>10.3f}")
    print(f"{'    teacher outputs, one pass':<52}{c.teacher_pass:>12,.0f}")
    print(f"{'    training phase, all epochs':<52}{c.training:>12,.0f}")
    print(f"{'    first epoch':<52}{c.first_epoch:>12,.0f}")
    print(f"{'    epochs after the first':<52}{c.later_epochs:>12,.0f}")
    print(f"{'    distill() end to end (with evaluation, export)':<52}{c.end_to_end:>12,.0f}")
    print(f"{'(c) engine loop, student alone (ceiling)':<52}{ceiling:>12,.0f}")
    if padded is not None:
        print(f"{'    the same on padded rows (no length bucketing)':<52}{padded:>12,.0f}")
    print(f"teacher accuracy {teacher_acc:.3f}; teacher outputs cache: {c.report['teacher_outputs_cache']}")
    spread = max(a_acc, b_acc, c_acc) - min(a_acc, b_acc, c_acc)
    print(
        f"ratios: (c)/(a) {c_speed / a_speed:.2f}x, (c)/(b) {c_speed / b_speed:.2f}x, "
        f"(c)/ceiling {c_speed / ceiling:.2f}, "
        + (f"(c)/padded student alone {c_speed / padded:.2f}, " if padded else "")
        + f"epochs after the first / ceiling {c.later_epochs / ceiling:.2f}; "
        f"accuracy spread {100 * spread:.1f} points"
        + ("" if spread <= 0.01 else " (more than one point: the speed comparison is void)")
    )
    return a_speed, b_speed, c_speed, c.later_epochs, ceiling


def print_tables(rows: list[tuple], augmented: list[tuple]) -> None:
    """The summary tables in Markdown: the plain rows, then the augmented-KD rows."""
    if rows:
        print(
            "\n| workload | (a) tutorial | (b) | (c) engine | (c) epochs after the first | (c) student alone "
            "| (c)/(a) | (c)/(b) | later epochs / alone |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, a, b, c, later, ceil in rows:
        print(
            f"| {name} | {a:,.0f} | {b:,.0f} | {c:,.0f} | {later:,.0f} | {ceil:,.0f} | {c / a:.2f} | {c / b:.2f} "
            f"| {later / ceil:.2f} |"
        )
    if augmented:
        print(
            "\n| workload, augmented KD | (a-aug) tutorial | (c-aug) cold cache | (c-aug) warm cache "
            "| cold/(a-aug) | warm/(a-aug) | accuracy (a-aug) / cold / warm |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, a, cold, warm, accuracies in augmented:
        print(
            f"| {name} | {a:,.0f} | {cold:,.0f} | {warm:,.0f} | {cold / a:.2f} | {warm / a:.2f} "
            f"| {' / '.join(f'{x:.3f}' for x in accuracies)} |"
        )


if __name__ == "__main__":
    main()
