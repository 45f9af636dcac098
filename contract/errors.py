"""Every `error.code` a client can meet: on an HTTP answer, on an invalid upload, on a failed job, or raised by the
client SDK itself. A code is stable; its message is for people and may change."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    # --- HTTP answers: the request itself ---
    BAD_REQUEST = "bad_request"  # 400
    UNAUTHORIZED = "unauthorized"  # 401: no, malformed or revoked API key
    NOT_FOUND = "not_found"  # 404, also for another tenant's id
    METHOD_NOT_ALLOWED = "method_not_allowed"  # 405
    CONFLICT = "conflict"  # 409
    PAYLOAD_TOO_LARGE = "payload_too_large"  # 413: an upload past the size limit
    INVALID_REQUEST = "invalid_request"  # 422: the body or query does not fit the schema
    TOO_MANY_REQUESTS = "too_many_requests"  # 429
    ERROR = "error"  # any other HTTP status the framework raises
    # --- HTTP answers: uploads ---
    UNSUPPORTED_MODEL_FORMAT = "unsupported_model_format"  # 422: a pickle, a bare state_dict, not a model at all
    UNSUPPORTED_DATASET_FORMAT = "unsupported_dataset_format"  # 422
    UNSAFE_ARCHIVE = "unsafe_archive"  # 422: links, absolute paths, a zip bomb
    MODEL_IN_USE = "model_in_use"  # 409: DELETE while a queued or running job uses it
    DATASET_IN_USE = "dataset_in_use"  # 409
    # 409: POST /v1/uploads on a server that keeps files on its own disk; send the file to /v1/models or /v1/datasets
    DIRECT_UPLOAD_UNAVAILABLE = "direct_upload_unavailable"
    SIZE_MISMATCH = "size_mismatch"  # 422: the parts of a direct upload do not add up to its declared size
    # --- HTTP answers: creating and reading jobs ---
    TEACHER_MODEL_NOT_FOUND = "teacher_model_not_found"  # 404
    STUDENT_MODEL_NOT_FOUND = "student_model_not_found"  # 404
    TRAIN_DATASET_NOT_FOUND = "train_dataset_not_found"  # 404
    EVAL_DATASET_NOT_FOUND = "eval_dataset_not_found"  # 404
    INPUT_NOT_READY = "input_not_ready"  # 409: an input is still validating; retry
    INVALID_INPUT = "invalid_input"  # 422: an input failed validation
    EVAL_WITHOUT_LABELS = "eval_without_labels"  # 422: the report's accuracies need labels
    BASELINE_WITHOUT_LABELS = "baseline_without_labels"  # 422: a baseline trains on labels alone
    WEBHOOK_URL_REFUSED = "webhook_url_refused"  # 422: a loopback, private or link-local address
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"  # 422: the same key with another body
    TOO_MANY_JOBS = "too_many_jobs"  # 429: the tenant's cap of queued plus running jobs
    JOB_FINISHED = "job_finished"  # 409: cancelling a job that has ended
    REPORT_NOT_READY = "report_not_ready"  # 404 until the job has a report
    ARTIFACT_GONE = "artifact_gone"  # 404: the artifact's row is there, its file no longer stored
    # --- uploads and jobs: what the engine finds in the inputs (also answered at job creation) ---
    INVALID_MODEL = "invalid_model"
    INVALID_DATASET = "invalid_dataset"
    INVALID_STUDENT = "invalid_student"
    INVALID_CONFIG = "invalid_config"  # hyperparameters or export list the engine refuses
    INPUT_MISMATCH = "input_mismatch"  # teacher input shape vs the dataset's examples
    CLASS_MISMATCH = "class_mismatch"  # more labels in the data than the teacher has classes
    LIMIT_EXCEEDED = "limit_exceeded"  # rows, columns, classes, tokens or student parameters past a server cap
    # --- failed jobs: what happened while running ---
    TEACHER_FAILED = "teacher_failed"  # the teacher raised on the data's examples (shape or dtype it cannot take)
    BUDGET_UNREACHABLE = "budget_unreachable"  # no student of the searched architectures fits the budget
    NON_FINITE = "non_finite"  # NaN or infinite loss, teacher outputs or weights
    CUDA_OOM = "cuda_oom"  # the GPU ran out of memory; a smaller batch_size may fit
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"  # max_runtime_s passed (the SDK also uses it for its own wait)
    WORKER_LOST = "worker_lost"  # the job's worker vanished too many times
    INPUT_DELETED = "input_deleted"  # an input's file was gone when the job started
    SANDBOX_CRASH = "sandbox_crash"  # the sandboxed child died without an answer
    SANDBOX_TIMEOUT = "sandbox_timeout"  # the child's wall-clock limit
    SANDBOX_CPU_LIMIT = "sandbox_cpu_limit"
    SANDBOX_MEMORY_LIMIT = "sandbox_memory_limit"
    SANDBOX_UNAVAILABLE = "sandbox_unavailable"  # code-bearing upload and no working sandbox on this server
    INTERNAL = "internal"  # our bug, not the user's (500, or a failed job)
    # --- raised by the client SDK, never sent by the server ---
    CONNECTION_ERROR = "connection_error"
    # A download's sha256 differs from the server's; also (sent by the server) a direct upload whose stored bytes
    # are not the sha256 declared for them.
    CHECKSUM_MISMATCH = "checksum_mismatch"
    STORE_ERROR = "store_error"  # the object store refused a part of a direct upload
    INVALID_UPLOAD = "invalid_upload"  # an invalid upload whose error carried no code


ERROR_CODES: tuple[str, ...] = tuple(code.value for code in ErrorCode)
