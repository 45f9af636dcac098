"""The auto recipe against a plain 10-epoch job on the same data, on the CPU: wall time, accuracy, agreement.

    .venv/bin/python -m tests.benchmarks.bench_recipe [--text] [--threads N]

Digits (the 64-pixel images of sklearn) always; with --text also real text from this machine (docstrings of
installed libraries, tests/support/real_text.py). A third job repeats the auto job with the same teacher cache
folder, to show what the augmented-output cache saves. Ratios are measured in one run; nothing is asserted.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from worker.engine import DatasetSpec, DistillConfig, distill

TEXT_STUDENT = {"architecture": "lstm", "embedding_dim": 16, "hidden_dim": 16, "bidirectional": True}


def digits_case(work: Path) -> tuple[str, DatasetSpec, DatasetSpec, dict]:
    from tests.support import digits

    x_train, y_train, x_test, y_test = digits.digits_arrays()
    train = digits.write_npz(work / "train.npz", x_train, y_train)
    test = digits.write_npz(work / "test.npz", x_test, y_test)
    teacher = str(digits.train_digits_teacher(work))
    return teacher, DatasetSpec(str(train), "npz"), DatasetSpec(str(test), "npz"), {}


def text_case(work: Path) -> tuple[str, DatasetSpec, DatasetSpec, dict]:
    from tests.support.real_text import real_text_fixture

    files = real_text_fixture()

    def spec(name: str) -> DatasetSpec:
        return DatasetSpec(str(files[name]), "csv", tokenizer_path=str(files["tokenizer"]), max_length=32)

    return str(files["teacher"]), spec("train"), spec("eval"), {"student": TEXT_STUDENT}


def timed_job(teacher, train, test, settings: dict, out: Path, cache: str | None) -> tuple[float, dict]:
    started = time.monotonic()
    report = distill(teacher, train, test, DistillConfig.from_dict(settings), str(out), teacher_cache_dir=cache)
    return time.monotonic() - started, report


def run_case(name: str, case, work: Path) -> None:
    teacher, train, test, student = case(work)
    cache = str(work / f"{name}-cache")
    plain_s, plain = timed_job(teacher, train, test, {**student, "recipe": "plain"}, work / f"{name}-plain", None)
    auto_s, auto = timed_job(teacher, train, test, student, work / f"{name}-auto", cache)
    again_s, again = timed_job(teacher, train, test, student, work / f"{name}-again", cache)
    recipe = auto["recipe"]
    print(f"\n== {name}: teacher accuracy {auto['teacher']['accuracy']:.4f}, compression {auto['compression_ratio']}x")
    print(f"{'job':<28}{'wall s':>8}{'ratio':>7}{'accuracy':>10}{'agreement':>11}")
    for label, seconds, report in (
        ("plain, 10 epochs", plain_s, plain),
        ("auto (nothing given)", auto_s, auto),
        ("auto again, cache warm", again_s, again),
    ):
        s = report["student"]
        print(f"{label:<28}{seconds:>8.2f}{seconds / plain_s:>7.2f}{s['accuracy']:>10.4f}{s['agreement']:>11.4f}")
    b = auto["baseline"]
    print(f"{'baseline (auto, labels only)':<28}{'':>15}{b['accuracy']:>10.4f}{b['agreement']:>11.4f}")
    print(f"student / teacher accuracy: {auto['student']['accuracy'] / auto['teacher']['accuracy']:.4f}")
    print(f"recipe chosen: {recipe['chosen']}")
    print(f"recipe seconds per stage: {recipe['seconds']}; budget: {recipe['budget']}")
    for trial in recipe["trials"]:
        print(f"  trial {trial}")
    print(f"augmented-output cache, first auto job: {recipe['augmented_outputs_cache']}")
    print(f"augmented-output cache, second auto job: {again['recipe']['augmented_outputs_cache']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", action="store_true", help="also the real-text case (trains an LSTM teacher)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-recipe-") as tmp:
        work = Path(tmp)
        run_case("digits", digits_case, work)
        if args.text:
            run_case("text", text_case, work)


if __name__ == "__main__":
    main()
