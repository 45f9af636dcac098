"""`distillery distill`: run the engine on local files, with no server, writing the same artifacts."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from app.sniff import sniff_dataset
from app.student_syntax import parse_student

logger = logging.getLogger(__name__)

HYPERPARAMETERS = {  # flag -> (type, help)
    "epochs": (int, "training epochs (10)"),
    "batch_size": (int, "batch size (64)"),
    "learning_rate": (float, "AdamW learning rate (0.001)"),
    "temperature": (float, "softmax temperature (4.0)"),
    "alpha": (float, "weight of the teacher's soft targets (0.9)"),
    "loss": (str, "kl | mse | dkd"),
    "seed": (int, "random seed (0)"),
    "patience": (int, "epochs without improvement before stopping"),
    "dkd_alpha": (float, "DKD target-class weight (1.0)"),
    "dkd_beta": (float, "DKD non-target weight (8.0)"),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `distillery distill`."""
    p = argparse.ArgumentParser(
        prog="distillery distill", description="Distil a teacher into a student locally."
    )
    p.add_argument("--teacher", required=True, type=Path, help="TorchScript or ONNX teacher")
    p.add_argument("--train", "--data", dest="train", required=True, type=Path, help="training data")
    p.add_argument("--eval", type=Path, help="eval data (default: a seeded 20%% of train)")
    p.add_argument(
        "--student",
        default='{"architecture": "mlp", "hidden_sizes": [64]}',
        help="'mlp:hidden_sizes=[32]' or a JSON object",
    )
    p.add_argument("--label-column"), p.add_argument("--text-column")
    p.add_argument("--tokenizer", type=Path, help="tokenizer.json for a text column")
    p.add_argument("--max-length", type=int), p.add_argument("--classes", help="comma-separated label order")
    for name, (kind, text) in HYPERPARAMETERS.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, help=text)
    p.add_argument("--augmentation", type=json.loads, help='JSON, e.g. {"token_dropout": 0.2}')
    p.add_argument("--export", default="torchscript,safetensors", help="comma-separated export formats")
    p.add_argument("--baseline", action="store_true", help="also train the student without the teacher")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    return p


def _spec(path: Path, args: argparse.Namespace):
    from worker.engine import DatasetSpec

    options = {
        k: v
        for k, v in {
            "label_column": args.label_column,
            "text_column": args.text_column,
            "max_length": args.max_length,
        }.items()
        if v is not None
    }
    if args.classes:
        options["classes"] = [c.strip() for c in args.classes.split(",")]
    fmt = sniff_dataset(path, options)
    return DatasetSpec(
        path=str(path), format=fmt, tokenizer_path=str(args.tokenizer) if args.tokenizer else None, **options
    )


def main(argv: list[str]) -> int:
    """Run one local distillation; returns the exit code."""
    from app.errors import ApiError
    from worker.engine import DistillConfig, EngineError, distill

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        hyper = {k: getattr(args, k) for k in HYPERPARAMETERS if getattr(args, k) is not None}
        if args.augmentation:
            hyper["augmentation"] = args.augmentation
        config = DistillConfig.from_dict(
            {
                **hyper,
                "student": parse_student(args.student),
                "export": [e.strip() for e in args.export.split(",") if e.strip()],
                "baseline": args.baseline,
            }
        )
        train = _spec(args.train, args)
        eval_ = _spec(args.eval, args) if args.eval else None
        args.out.mkdir(parents=True, exist_ok=True)

        def show(event) -> None:
            if event.type != "progress":
                logger.info("%s: %s", event.type, event.message)

        report = distill(
            str(args.teacher),
            train,
            eval_,
            config,
            str(args.out),
            progress=show,
            checkpoint_dir=str(args.out / ".checkpoints"),
        )
    except (EngineError, ApiError, ValueError) as exc:
        sys.stderr.write(f"error: {getattr(exc, 'message', exc)}\n")
        return 2
    student, teacher = report["student"], report["teacher"]
    sys.stdout.write(
        f"student accuracy {student['accuracy']}, agreement {student['agreement']}, teacher accuracy "
        f"{teacher['accuracy']}; {report['compression_ratio']:.1f}x fewer parameters; files in {args.out}\n"
    )
    return 0
