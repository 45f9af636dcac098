"""`distillery distill`: run the engine on local files, with no server, writing the same artifacts."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

from app.sniff import sniff_dataset
from app.student_syntax import parse_student
from contract import DEFAULT_EXPORTS, EXPORT_FORMATS, HYPERPARAMETERS_BY_NAME

logger = logging.getLogger(__name__)

# The hyperparameter flags of `distillery distill`, by name: one per row of contract.HYPERPARAMETERS.
HYPERPARAMETERS = HYPERPARAMETERS_BY_NAME
NULLS = ("null", "none")


def _value_or_null(kind: type):
    """An argparse type for a nullable setting: `null` (or `none`) gives None, anything else `kind`."""

    def parse(text: str):
        return None if text.lower() in NULLS else kind(text)

    parse.__name__ = kind.__name__
    return parse


def add_hyperparameter_flags(p: argparse.ArgumentParser) -> None:
    """One flag per row of contract.HYPERPARAMETERS; a flag left out is not passed, so the engine's default holds."""
    for hp in HYPERPARAMETERS.values():
        flag, text = "--" + hp.name.replace("_", "-"), hp.describe().replace("%", "%%")
        if hp.type is bool:
            text = f"{hp.help} (off unless given)"
            p.add_argument(flag, dest=hp.name, action="store_true", default=argparse.SUPPRESS, help=text)
            continue
        if hp.type is dict:
            kind = json.loads  # JSON, e.g. {"token_dropout": 0.2}; null switches augmentation off
        else:
            kind = _value_or_null(hp.type) if hp.nullable else hp.type
        p.add_argument(flag, dest=hp.name, type=kind, choices=hp.choices or None, default=argparse.SUPPRESS, help=text)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `distillery distill`."""
    p = argparse.ArgumentParser(prog="distillery distill", description="Distil a teacher into a student locally.")
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
    add_hyperparameter_flags(p)
    p.add_argument(
        "--export",
        default=",".join(DEFAULT_EXPORTS),
        help=f"comma-separated export formats, from {', '.join(EXPORT_FORMATS)}",
    )
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
        hyper = {name: getattr(args, name) for name in HYPERPARAMETERS if hasattr(args, name)}
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
        # The checkpoints let an interrupted run resume; once it has finished, --out holds only the artifacts.
        shutil.rmtree(args.out / ".checkpoints", ignore_errors=True)
    except (EngineError, ApiError, ValueError) as exc:
        sys.stderr.write(f"error: {getattr(exc, 'message', exc)}\n")
        return 2
    student, teacher = report["student"], report["teacher"]
    sys.stdout.write(
        f"student accuracy {student['accuracy']}, agreement {student['agreement']}, teacher accuracy "
        f"{teacher['accuracy']}; {report['compression_ratio']:.1f}x fewer parameters; files in {args.out}\n"
    )
    return 0
