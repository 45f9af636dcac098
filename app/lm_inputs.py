"""The checks behind POST /v1/jobs for causal language models: a Hugging Face causal-LM teacher distils on a
prompts dataset (JSONL `prompt`/`completion` or chat `messages`, info.kind "prompts"), by the job's `lm` settings.

Read from what validation recorded about the uploads (their info), never from their bytes.
"""

from __future__ import annotations

from app.errors import Unprocessable
from app.models import Dataset, Model
from contract.wire import LOGIT_METHODS, JobCreate, LMOptions, StudentSpec

PROMPTS_KIND = "prompts"
PROMPTS_HINT = 'a JSONL of {"prompt": "...", "completion": "..."} rows or chat {"messages": [...]} rows'


def is_causal_lm(model: Model | None) -> bool:
    """Whether an upload is a Hugging Face causal language model."""
    return model is not None and model.format == "hf" and (model.info or {}).get("task") == "causal_lm"


def is_prompts(dataset: Dataset | None) -> bool:
    """Whether a dataset was validated as prompts for a causal language model."""
    return dataset is not None and (dataset.info or {}).get("kind") == PROMPTS_KIND


def refuse_lm_options(body: JobCreate, teacher: Model) -> None:
    """A classifier job with `lm` settings: 422, since they would be ignored."""
    if body.lm is not None:
        task = (teacher.info or {}).get("task") or "classifier"
        raise Unprocessable(
            f"`lm` settings are for causal language model teachers; this teacher is a {teacher.format} {task} "
            "model: leave `lm` out (its training settings are `hyperparameters`)",
            code="invalid_config",
        )


def check_lm_job(body: JobCreate, teacher: Model, train: Dataset, eval_: Dataset | None, student: Model | None):
    """Refuse a causal-LM job that can never run; fill in its default student and `lm` settings."""
    if not is_causal_lm(teacher):
        task = (teacher.info or {}).get("task")
        raise Unprocessable(
            "this dataset holds prompts for a causal language model, and this teacher is a "
            f"{teacher.format}{' ' + task if task else ''} model: a classifier distils on a labelled table "
            "(CSV, JSONL with a label, Parquet, .npz), a prompts dataset needs a Hugging Face causal-LM teacher",
            code="input_mismatch",
        )
    if not is_prompts(train):
        raise Unprocessable(
            f"a causal language model teacher distils on prompts: {PROMPTS_HINT}; this training dataset is a "
            f"{train.format} table",
            code="input_mismatch",
        )
    if not (train.info or {}).get("has_completions"):
        raise Unprocessable(
            "the training prompts need some rows with a completion: the SFT baseline every job trains learns "
            "from them (rows without one get the teacher's generation)",
            code="input_mismatch",
        )
    if eval_ is None or not is_prompts(eval_) or not (eval_.info or {}).get("has_completions"):
        raise Unprocessable(
            f"a causal-LM job needs eval_dataset_id: held-out prompts with completions ({PROMPTS_HINT}), on "
            "which the teacher's, the student's and the baseline's perplexities are measured",
            code="input_mismatch",
        )
    if (body.resources.gpus or 0) > 1:
        raise Unprocessable("a causal-LM job runs on one device: ask for at most 1 GPU", code="invalid_config")
    chats = [d for d in (train, eval_) if (d.info or {}).get("has_messages")]
    if chats and not (teacher.info or {}).get("chat_template"):
        raise Unprocessable(
            "this dataset holds chat `messages`, which are rendered with the teacher's chat template, and this "
            "teacher's tokenizer has none: upload a teacher whose tokenizer_config.json has a chat_template, or "
            'the rows as {"prompt": "...", "completion": "..."}',
            code="input_mismatch",
        )
    _check_lm_student(body, teacher, student)


def _check_lm_student(body: JobCreate, teacher: Model, student: Model | None) -> None:
    if "student" not in body.model_fields_set:
        body.student = StudentSpec.model_validate({"architecture": "hf"})
    options = body.lm = body.lm or LMOptions()
    if student is None:
        if body.student.search or body.student.architecture != "hf":
            raise Unprocessable(
                "a causal-LM student is a smaller copy of the teacher's family ({'architecture': 'hf', "
                "'num_hidden_layers': ...}) or an uploaded Hugging Face causal LM (model_id)",
                code="invalid_student",
            )
        return
    if not is_causal_lm(student):
        raise Unprocessable(
            f"an uploaded student of a causal-LM teacher must be a Hugging Face causal LM; this one is a "
            f"{student.format} {(student.info or {}).get('task') or ''} model".rstrip(),
            code="invalid_student",
        )
    if options.method in LOGIT_METHODS:
        _check_same_vocabulary(options.method, teacher.info or {}, student.info or {})


def _check_same_vocabulary(method: str, teacher: dict, student: dict) -> None:
    """Logit KD needs one vocabulary, id for id: compared by the tokenizers' content (the fingerprint validation
    recorded), and by size where an upload has no fingerprint."""
    s_vocab, t_vocab = student.get("vocab_size"), teacher.get("vocab_size")
    s_print, t_print = student.get("vocabulary_sha256"), teacher.get("vocabulary_sha256")
    if s_vocab != t_vocab:
        differs = f"the student's has {s_vocab} ids and the teacher's {t_vocab}"
    elif s_print and t_print and s_print != t_print:
        differs = f"both have {s_vocab} ids, but their tokenizers map tokens to ids differently"
    else:
        return
    raise Unprocessable(
        f"{method} compares the two models token by token, so they must share a vocabulary; {differs}: use "
        "method seq_kd (sequence-level KD, any tokenizer pair) or a student with the teacher's tokenizer",
        code="invalid_student",
    )
