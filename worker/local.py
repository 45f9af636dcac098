"""`distillery distill`: run the engine on local files, with no server, writing the same artifacts."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

from contract import DEFAULT_EXPORTS, EXPORT_FORMATS, HYPERPARAMETERS_BY_NAME, validate_hyperparameters
from contract.student_syntax import parse_student

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
        default=None,
        help="'mlp:hidden_sizes=[32]' or a JSON object (default: by the data, mlp [64] or a BiLSTM for text)",
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


class BadConfiguration(ValueError):
    """A configuration `distill` refuses before any heavy work; the message is one line for the user."""


def _pydantic_text(exc: Exception) -> str:
    """A validation error as 'architecture must be one of ...', without pydantic's wording."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    texts = []
    for e in errors():
        loc = ".".join(map(str, e["loc"]))
        msg = str(e["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        texts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(texts)


def _check_student(text: str) -> dict:
    from pydantic import TypeAdapter

    from contract.wire import StudentSpec

    try:
        spec = parse_student(text)
        adapter = TypeAdapter(StudentSpec)
        adapter.validate_python(spec)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise BadConfiguration(f"--student: {_pydantic_text(exc)}") from None
    if spec.get("model_id"):
        raise BadConfiguration("--student: a local run takes a built-in architecture, not a model_id")
    return spec


def _check_files(args: argparse.Namespace) -> None:
    for flag, path in (("--teacher", args.teacher), ("--train", args.train), ("--eval", args.eval)):
        if path is not None and not path.is_file():
            raise BadConfiguration(f"{flag}: no file at {path}")
    if args.tokenizer is not None and not args.tokenizer.is_file():
        raise BadConfiguration(f"--tokenizer: no file at {args.tokenizer}")
    if args.out.exists() and not args.out.is_dir():
        raise BadConfiguration(f"--out: {args.out} exists and is not a folder")


def check_configuration(args: argparse.Namespace) -> dict:
    """The whole configuration, checked before any heavy work (no torch, no file read): the student spec and the
    hyperparameters as the API checks them, the export formats and the files. Raises BadConfiguration."""
    hyper = {name: getattr(args, name) for name in HYPERPARAMETERS if hasattr(args, name)}
    try:
        validate_hyperparameters(hyper)
    except ValueError as exc:
        name = getattr(exc, "name", None)
        raise BadConfiguration(f"--{name.replace('_', '-')}: {exc}" if name else str(exc)) from None
    export = [e.strip() for e in args.export.split(",") if e.strip()]
    unknown = [e for e in export if e not in EXPORT_FORMATS]
    if unknown:
        raise BadConfiguration(f"--export: unknown format(s) {', '.join(unknown)}; known: {', '.join(EXPORT_FORMATS)}")
    student = _check_student(args.student) if args.student else {}
    _check_files(args)
    return {**hyper, "student": student, "export": export, "baseline": args.baseline}


def _spec(path: Path, args: argparse.Namespace):
    from app.sniff import sniff_dataset
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
    args = build_parser().parse_args(argv)
    try:  # before the engine (and torch) is even imported: a bad configuration fails at once
        configuration = check_configuration(args)
    except BadConfiguration as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from app.errors import ApiError
    from worker.engine import EngineError

    try:
        report = _distill(args, configuration)
    except (EngineError, ApiError, ValueError) as exc:
        sys.stderr.write(f"error: {getattr(exc, 'message', exc)}\n")
        return 2
    student, teacher = report["student"], report["teacher"]
    sys.stdout.write(
        f"student accuracy {student['accuracy']}, agreement {student['agreement']}, teacher accuracy "
        f"{teacher['accuracy']}; {report['compression_ratio']:.1f}x fewer parameters; files in {args.out}\n"
    )
    return 0


def _distill(args: argparse.Namespace, configuration: dict) -> dict:
    """Read the data, distil, and leave only the artifacts in --out."""
    from worker.engine import DistillConfig, distill

    config = DistillConfig.from_dict(configuration)
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
    return report
