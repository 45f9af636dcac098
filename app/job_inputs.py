"""The checks behind POST /v1/jobs that read the job's inputs: they exist, are ready, and fit each other."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from app.errors import Conflict, NotFound, Unprocessable
from app.lm_inputs import check_lm_job, is_causal_lm, is_prompts, refuse_lm_options
from app.models import Dataset, Model, Tenant
from app.settings import get_settings
from app.webhooks import WebhookTargetError, check_target
from contract import TEXT_ARCHITECTURES, default_student_for
from contract.wire import JobCreate, StudentSpec

logger = logging.getLogger(__name__)

TOKEN_DTYPES = ("int64", "int32")


def ready_input(session: Session, cls: type, obj_id: str, tenant: Tenant, what: str):
    """The tenant's upload `obj_id` once validated: 404 if not the tenant's, 409 while validating, 422 if invalid."""
    row = session.get(cls, obj_id)
    if row is None or row.tenant_id != tenant.id:
        raise NotFound(f"no {what} with id {obj_id!r}", code=f"{what.replace(' ', '_')}_not_found")
    if row.status == "validating":
        raise Conflict(
            f"{what} {obj_id} is still being validated; retry when its status is ready",
            code="input_not_ready",
        )
    if row.status == "invalid":
        message = (row.error or {}).get("message", "it failed validation")
        raise Unprocessable(f"{what} {obj_id} is invalid: {message}", code="invalid_input")
    return row


def _shapes_fit(expected: list, actual: list) -> bool:
    """Whether an example's shape fits a model's per-example input shape."""
    return len(expected) == len(actual) and all(
        not isinstance(e, int) or e <= 0 or e == a for e, a in zip(expected, actual, strict=True)
    )


def _check_teacher_fit(t_info: dict, d_info: dict) -> None:
    d_input = (d_info.get("input") or {}).get("shape")
    t_input = (t_info.get("input") or {}).get("shape")
    # Both shapes are per example (no batch axis); a None or named axis fits any size.
    if t_input and d_input and not _shapes_fit(t_input, d_input):
        raise Unprocessable(
            f"the teacher takes inputs of shape {t_input} but the dataset's examples have shape {d_input}",
            code="input_mismatch",
        )
    t_classes, d_classes = t_info.get("num_classes"), d_info.get("num_classes")
    if t_classes and d_classes and d_classes > t_classes:
        raise Unprocessable(
            f"the teacher outputs {t_classes} classes but the dataset has {d_classes} labels",
            code="class_mismatch",
        )


def _check_hf_teacher_fit(t_info: dict, d_info: dict) -> None:
    """A Hugging Face teacher: a sequence classifier, on token ids from its own tokenizer's vocabulary."""
    if t_info.get("task") != "sequence_classification":  # a causal LM never gets here (app/lm_inputs.py)
        raise Unprocessable(
            f"this teacher is a Hugging Face {t_info.get('task')} model; a …ForSequenceClassification or "
            "…ForCausalLM teacher is",
            code="unsupported_model_format",
        )
    dtype = (d_info.get("input") or {}).get("dtype")
    if dtype not in (*TOKEN_DTYPES, "text"):
        raise Unprocessable(
            "a Hugging Face teacher reads token ids: upload the text table with the teacher's own tokenizer.json "
            "(from its folder) as the `tokenizer` field",
            code="input_mismatch",
        )
    t_vocab, d_vocab = t_info.get("vocab_size"), d_info.get("vocab_size")
    if isinstance(t_vocab, int) and isinstance(d_vocab, int) and d_vocab > t_vocab:
        raise Unprocessable(
            f"the dataset was tokenised into {d_vocab} token ids but the teacher knows {t_vocab}: tokenise it with "
            "the teacher's own tokenizer.json (from its folder)",
            code="input_mismatch",
        )


def _check_eval_fit(e_info: dict, d_info: dict) -> None:
    e_input = (e_info.get("input") or {}).get("shape")
    d_input = (d_info.get("input") or {}).get("shape")
    if e_input and d_input and e_input != d_input:
        raise Unprocessable(
            f"eval examples have shape {e_input} but training examples have {d_input}",
            code="input_mismatch",
        )
    if not e_info.get("has_labels", True):
        raise Unprocessable(
            "the eval dataset has no labels; the report's accuracies need them", code="eval_without_labels"
        )


def _check_student_fit(body: JobCreate, d_info: dict) -> None:
    search = body.student.search
    for arch in search["architectures"] if search else [body.student.architecture]:
        _check_architecture_fit(arch, d_info, searched=search is not None)
    if body.baseline and not d_info.get("has_labels", True):
        raise Unprocessable(
            "baseline needs labels in the training data (it trains without the teacher)",
            code="baseline_without_labels",
        )


def _check_architecture_fit(arch: str | None, d_info: dict, searched: bool) -> None:
    d_input = (d_info.get("input") or {}).get("shape")
    d_dtype = d_info.get("input", {}).get("dtype", "int64")
    where = " (remove it from search.architectures)" if searched else ""
    if arch == "cnn" and d_input is not None and len(d_input) != 3:
        raise Unprocessable(
            f"the cnn student needs examples shaped [C, H, W]; these are {d_input}{where}", code="invalid_student"
        )
    if arch in TEXT_ARCHITECTURES and d_dtype not in (*TOKEN_DTYPES, "text"):
        raise Unprocessable(
            f"the {arch} student needs token ids; this dataset holds {d_dtype}{where}", code="invalid_student"
        )
    if arch in ("mlp", "cnn") and d_dtype == "text":
        raise Unprocessable(
            f"the {arch} student needs float features; this dataset is text tokenised at job time",
            code="invalid_student",
        )
    if searched and arch in ("mlp", "cnn") and d_dtype in TOKEN_DTYPES:
        raise Unprocessable(
            f"the {arch} student needs float features; this dataset holds token ids{where}", code="invalid_student"
        )


def check_fit(body: JobCreate, teacher: Model, train: Dataset, eval_: Dataset | None) -> None:
    """Refuse jobs that can never run, from what validation recorded about the inputs."""
    d_info = train.info or {}
    if d_info.get("tokenizer_from") == "teacher" and not (
        teacher.format == "hf" and (teacher.info or {}).get("tokenizer")
    ):
        raise Unprocessable(
            "this dataset was uploaded with tokenizer_from=teacher, so only a Hugging Face teacher with its own "
            f"tokenizer.json can tokenise it (this teacher is {teacher.format}); upload it again with tokenizer.json",
            code="input_mismatch",
        )
    if teacher.format == "hf":
        _check_hf_teacher_fit(teacher.info or {}, d_info)
    elif body.student.architecture == "hf":
        raise Unprocessable(
            f"an hf student is a smaller copy of a Hugging Face teacher, and this teacher is {teacher.format}; "
            "choose another architecture",
            code="invalid_student",
        )
    _check_teacher_fit(teacher.info or {}, d_info)
    if eval_ is not None:
        _check_eval_fit(eval_.info or {}, d_info)
    _check_student_fit(body, d_info)


def check_student_size(student: Model) -> None:
    """Refuse an uploaded student larger than the server's cap (built-in students are checked by the engine)."""
    cap = get_settings().max_student_parameters
    count = (student.info or {}).get("num_parameters")
    if isinstance(count, int) and count > cap:
        raise Unprocessable(
            f"the uploaded student has {count:,} parameters, more than this server's cap of {cap:,} "
            "(DISTILLERY_MAX_STUDENT_PARAMETERS); upload a smaller student",
            code="limit_exceeded",
        )


def _check_hf_student(s_info: dict, teacher: Model) -> None:
    """An uploaded Hugging Face student: a sequence classifier reading the teacher's token ids."""
    t_info = teacher.info or {}
    if teacher.format != "hf" or s_info.get("task") != "sequence_classification":
        raise Unprocessable(
            "an uploaded Hugging Face student must be a sequence classifier distilled from a Hugging Face teacher; "
            f"this teacher is {teacher.format} and the student a {s_info.get('task')} model",
            code="invalid_student",
        )
    s_vocab, t_vocab = s_info.get("vocab_size"), t_info.get("vocab_size")
    if s_vocab != t_vocab:
        raise Unprocessable(
            f"the student's vocabulary ({s_vocab} ids) differs from the teacher's ({t_vocab}): they must share one "
            "tokenizer; or use {'architecture': 'hf'}, built from the teacher",
            code="invalid_student",
        )


def check_webhook(url: str) -> None:
    """Refuse a webhook_url on a loopback, private or link-local address (unless settings allow it)."""
    try:
        check_target(url, get_settings().webhook_allow_private)
    except WebhookTargetError as exc:
        raise Unprocessable(str(exc), code="webhook_url_refused") from exc


def job_inputs(session: Session, tenant: Tenant, body: JobCreate) -> tuple[Model, Dataset, Dataset | None]:
    """The job's teacher, train and eval rows, each ready and the tenant's, and fitting each other."""
    teacher = ready_input(session, Model, body.teacher_id, tenant, "teacher model")
    train = ready_input(session, Dataset, body.train_dataset_id, tenant, "train dataset")
    eval_ = (
        ready_input(session, Dataset, body.eval_dataset_id, tenant, "eval dataset") if body.eval_dataset_id else None
    )
    student = None
    if body.student.model_id:
        student = ready_input(session, Model, body.student.model_id, tenant, "student model")
        check_student_size(student)
    if is_causal_lm(teacher) or is_prompts(train):
        check_lm_job(body, teacher, train, eval_, student)
        return teacher, train, eval_
    refuse_lm_options(body, teacher)
    if student is not None and student.format == "hf":
        _check_hf_student(student.info or {}, teacher)
    if "student" not in body.model_fields_set:
        # The data kind decides the default: an MLP cannot read token ids.
        dtype = ((train.info or {}).get("input") or {}).get("dtype")
        body.student = StudentSpec.model_validate(default_student_for(dtype))
    check_fit(body, teacher, train, eval_)
    return teacher, train, eval_
