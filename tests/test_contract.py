"""The contract layer (contract/) is the one vocabulary of a job: the API and the engine accept the same jobs."""

from __future__ import annotations

import ast
import math
import random
import re
import sys
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from contract import (
    AUGMENTATIONS,
    ERROR_CODES,
    HYPERPARAMETERS,
    JOB_STATUSES,
    LOSSES,
    STUDENT_ARCHITECTURES,
    TEXT_ARCHITECTURES,
    Hyperparameter,
    validate_hyperparameters,
)
from contract.wire import Hyperparameters, JobPublic, StudentSpec
from worker.engine import DistillConfig, EngineError
from worker.engine.config import NO_CLIPPING
from worker.engine.loop import train_step
from worker.engine.losses import LOSSES as LOSS_FUNCTIONS
from worker.engine.students import TEXT_ARCHITECTURES as ENGINE_TEXT_ARCHITECTURES
from worker.engine.students import build_student
from worker.local import build_parser

ROOT = Path(__file__).resolve().parents[1]
# Keys DistillConfig takes beside the hyperparameters (the job's student, export list, ...): not typos to it.
JOB_FIELDS = {"student", "export", "baseline", "device"}
TYPOS = ["epoch", "lr", "Epochs", "gradclip", "grad-clip", "augmentations", "dropout", "", "compile "]


def api_accepts(d: dict) -> dict | None:
    try:
        return Hyperparameters.model_validate(d).model_dump()
    except ValidationError:
        return None


def engine_accepts(d: dict) -> dict | None:
    try:
        return DistillConfig.from_dict(d).hyperparameters()
    except EngineError as exc:
        assert exc.code == "invalid_config"
        return None


def _edges(p: Hyperparameter) -> list[float]:
    """Numbers at, just inside and just outside both ends of a hyperparameter's bounds."""
    b, values = p.bounds, []
    for end, outward in ((b.low, -math.inf), (b.high, math.inf)):
        values += [end, math.nextafter(end, outward), math.nextafter(end, -outward)]
        if p.type is int:
            values += [int(end), int(end) - 1, int(end) + 1]
    return values


def sample_value(p: Hyperparameter, rng: random.Random):
    """A value for one hyperparameter: often valid, often at or past an edge, sometimes the wrong type."""
    wrong_type = [None, True, False, "3", "", [], {}, [1], 10**400, math.nan, math.inf, -math.inf]
    if p.type in (int, float):
        b = p.bounds
        inside = rng.uniform(b.low, min(b.high, b.low + 10 ** rng.uniform(-3, math.log10(b.high - b.low + 1))))
        if p.type is int:
            candidates = [round(inside), int(b.low), int(b.high), round(inside) * 1.0, rng.randint(-(10**6), 10**12)]
        else:
            candidates = [inside, rng.randint(int(b.low), int(b.high)), rng.uniform(-10, 2 * b.high)]
        return rng.choice(candidates + _edges(p) + wrong_type)
    if p.type is bool:
        return rng.choice([True, False, True, False, 0, 1, "true", None, 0.0])
    if p.choices:
        return rng.choice([*p.choices, *p.choices, "KL", "kd", "", None, 1, ["kl"]])
    return sample_augmentation(rng)


def sample_augmentation(rng: random.Random):
    if rng.random() < 0.15:
        return rng.choice([None, {}, [], "noise", 0.1, True, [("noise", 0.1)]])
    value: dict = {}
    for augmentation in rng.sample(AUGMENTATIONS, rng.randint(1, len(AUGMENTATIONS))):
        low, high = augmentation.bounds.low, augmentation.bounds.high
        value[augmentation.name] = rng.choice(
            [
                rng.uniform(low, high),
                rng.uniform(low, high),
                low,
                high,
                0,
                1,
                math.nextafter(high, math.inf),
                math.nextafter(low, -math.inf),
                1.5,
                10,
                -0.1,
                None,
                True,
                "0.1",
                math.nan,
                10**400,
            ]
        )
    if rng.random() < 0.1:
        value[rng.choice(["Noise", "cutmix", "dropout", ""])] = 0.1
    return value


def sample_jobs(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    jobs = []
    for _ in range(n):
        chosen = rng.sample(HYPERPARAMETERS, rng.choice([0, 1, 1, 2, 2, 3, 4, 6]))
        d = {p.name: sample_value(p, rng) for p in chosen}
        if rng.random() < 0.05:
            d[rng.choice(TYPOS)] = rng.choice([1, 0.5, None, "x"])
        jobs.append(d)
    return jobs


def test_the_api_schema_and_the_engine_accept_exactly_the_same_hyperparameters():
    jobs = sample_jobs(4000, seed=20240611)
    disagreements, accepted = [], 0
    for d in jobs:
        api, engine = api_accepts(d), engine_accepts(d)
        if (api is None) != (engine is None) or api != engine:
            disagreements.append((d, api, engine))
        accepted += api is not None
    assert disagreements[:5] == []
    # The sample is worth something only if it holds plenty of both outcomes.
    assert 0.2 * len(jobs) < accepted < 0.8 * len(jobs), accepted


@pytest.mark.parametrize("p", [p for p in HYPERPARAMETERS if p.bounds is not None], ids=lambda p: p.name)
def test_every_bound_is_the_same_on_both_sides(p):
    for value in _edges(p):
        inside = p.bounds.contains(value) and (p.type is float or isinstance(value, int))
        assert (api_accepts({p.name: value}) is not None) == inside, value
        assert (engine_accepts({p.name: value}) is not None) == inside, value


def test_null_grad_clip_means_no_clipping_in_the_engine():
    config = DistillConfig.from_dict({"grad_clip": None})
    assert config.grad_clip == NO_CLIPPING and config.to_dict()["grad_clip"] is None
    assert DistillConfig.from_dict(config.to_dict()).grad_clip == NO_CLIPPING  # the manifest's config resumes
    assert DistillConfig.from_dict({}).grad_clip == 1.0

    def gradient_norm_after_a_step(config: DistillConfig) -> float:
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        x, y = torch.full((8, 4), 100.0), torch.zeros(8, dtype=torch.long)
        teacher = torch.randn(8, 3) * 10
        train_step(model, model, torch.optim.SGD(model.parameters()), x, y, teacher, 0.0, config, alpha=0.5)
        return float(torch.cat([p.grad.flatten() for p in model.parameters()]).norm())

    assert gradient_norm_after_a_step(DistillConfig.from_dict({})) <= 1.0 + 1e-5
    assert gradient_norm_after_a_step(config) > 10.0


@pytest.mark.parametrize(
    "hyperparameters",
    [
        {"epochs": 1001},
        {"epochs": 5000},
        {"epochs": 10000},
        {"weight_decay": 1.5},
        {"weight_decay": 10},
        {"augmentation": {"noise": 1.5}},
        {"augmentation": {"noise": 10}},
        {"augmentation": {"mixup": 2}},
        {"augmentation": {"mixup": 10}},
        {"dkd_alpha": 500},
        {"dkd_beta": 1000},
        {"patience": 5000},
        {"grad_clip": 0},
    ],
    ids=str,
)
def test_values_the_api_and_the_engine_used_to_disagree_on_are_refused_by_both(hyperparameters):
    assert api_accepts(hyperparameters) is None
    assert engine_accepts(hyperparameters) is None


def test_the_contract_imports_only_the_standard_library_and_itself():
    """Plain Python; only `contract.wire` (the HTTP shapes) may add pydantic, never torch or FastAPI."""
    for path in (ROOT / "contract").rglob("*.py"):
        allowed = {"pydantic"} if path.parent.name == "wire" else set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else []
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top == "contract" or top in sys.stdlib_module_names or top in allowed, f"{path.name}: {name}"
                assert top not in ("torch", "fastapi", "app", "worker")


def test_validate_hyperparameters_fills_every_default():
    resolved = validate_hyperparameters({"epochs": 3})
    assert resolved == {**{p.name: p.default for p in HYPERPARAMETERS}, "epochs": 3}
    assert list(Hyperparameters.model_fields) == [p.name for p in HYPERPARAMETERS]


def test_every_size_parameter_the_api_accepts_is_one_the_engine_builds(tmp_path):
    from tests.support import hf_folders
    from worker.engine.teachers import load_teacher

    shapes = {"features": ([12], "float32"), "images": ([3, 8, 8], "float32"), "tokens": ([16], "int64")}
    # An hf student is a smaller copy of its Hugging Face teacher: it is built from one.
    folder, _ = hf_folders.bert_classifier(tmp_path / "bert")
    hf_teacher = load_teacher(str(hf_folders.zip_folder(folder, tmp_path / "bert.zip")))
    for arch in STUDENT_ARCHITECTURES:
        spec = {"architecture": arch.name, **{p.name: p.default for p in arch.parameters if p.default is not None}}
        StudentSpec.model_validate(spec)
        shape, dtype = shapes[arch.inputs]
        teacher = hf_teacher if arch.name == "hf" else None
        assert build_student(spec, shape, dtype, 3, vocab_size=50, pad_id=0, teacher=teacher) is not None, arch.name
    assert set(TEXT_ARCHITECTURES) == set(ENGINE_TEXT_ARCHITECTURES)
    with pytest.raises(ValidationError, match="hidden_size"):  # the engine's cnn never took it
        StudentSpec.model_validate({"architecture": "cnn", "hidden_size": 32})


def test_the_engine_has_a_loss_function_for_every_loss_name():
    assert set(LOSS_FUNCTIONS) == set(LOSSES)


def test_every_error_code_in_the_code_is_in_the_contract():
    code = r'"([a-z_]*[a-z])"'  # a whole literal: not the "invalid_" of "invalid_" + kind
    patterns = [
        r"EngineError\(\s*" + code,
        "code=" + code,
        '"code": ' + code,
        "code = " + code,
        r"status, code = \d+, " + code,
        r"DistilleryError\(\d+, " + code,
        "default_code=" + code,
    ]
    found = set()
    for package in ("app", "worker"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            for pattern in patterns:
                found.update(re.findall(pattern, text))
    # Codes built from a name (app/jobs.py, app/routes/uploads.py, worker/sandbox.py).
    found |= {
        "teacher_model_not_found",
        "student_model_not_found",
        "train_dataset_not_found",
        "eval_dataset_not_found",
        "model_in_use",
        "dataset_in_use",
        "invalid_model",
        "invalid_dataset",
    }
    assert {"non_finite", "cuda_oom", "limit_exceeded", "worker_lost", "input_deleted"} <= found
    assert sorted(found - set(ERROR_CODES)) == []


def test_job_statuses_on_the_wire_are_the_contracts():
    schema = JobPublic.model_json_schema()
    assert schema["properties"]["status"] == {"$ref": "#/$defs/JobStatus"}
    assert schema["$defs"]["JobStatus"]["enum"] == list(JOB_STATUSES)


def test_the_local_cli_has_a_flag_for_every_hyperparameter():
    required = ["--teacher", "t", "--train", "d", "--out", "o"]
    assert not any(p.name in vars(build_parser().parse_args(required)) for p in HYPERPARAMETERS)
    args = build_parser().parse_args([*required, "--grad-clip", "null", "--epochs", "3", "--compile"])
    assert (args.grad_clip, args.epochs, args.compile) == (None, 3, True)
    help_text = build_parser().format_help()
    assert all("--" + p.name.replace("_", "-") in help_text for p in HYPERPARAMETERS)
