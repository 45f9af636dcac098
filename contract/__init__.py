"""The job's vocabulary, the lowest layer of Distillery: names, bounds, enums and error codes.

Plain dataclasses and enums, no torch, FastAPI or pydantic, so that the API, the engine, the worker and the
CLIs all read the one definition (DESIGN.md, "Layout"):

    hyperparameters  the hyperparameter table, augmentation kinds, validate_hyperparameters
    students         built-in student architectures and their size parameters
    losses, exports  loss names and export formats
    jobs             job and upload statuses, phases, ACTIVE / TERMINAL
    errors           every error code a client can meet
    bounds           numeric ranges with open or closed ends
    wire             the HTTP API's request and response shapes (pydantic; the server and the client SDK share them;
                     not imported here, so the engine never loads pydantic through the contract)
    student_syntax   the CLI's `lstm:hidden_dim=32` shorthand for a student spec
"""

from contract.bounds import Bounds
from contract.errors import ERROR_CODES, ErrorCode
from contract.exports import DEFAULT_EXPORTS, EXPORT_FORMATS, ExportFormat
from contract.hyperparameters import (
    AUGMENTATION_KINDS,
    AUGMENTATIONS,
    HYPERPARAMETERS,
    HYPERPARAMETERS_BY_NAME,
    Augmentation,
    Hyperparameter,
    InvalidHyperparameters,
    check_augmentation,
    validate_hyperparameters,
)
from contract.jobs import ACTIVE, JOB_STATUSES, PHASES, TERMINAL, UPLOAD_STATUSES, JobStatus, Phase, UploadStatus
from contract.losses import LOSSES, Loss
from contract.students import (
    ARCHITECTURES,
    DEFAULT_STUDENT,
    DEFAULT_TEXT_STUDENT,
    STUDENT_ARCHITECTURES,
    TEXT_ARCHITECTURES,
    SizeParameter,
    StudentArchitecture,
    check_student_parameters,
    default_student_for,
)

__all__ = [
    "ACTIVE",
    "ARCHITECTURES",
    "AUGMENTATIONS",
    "AUGMENTATION_KINDS",
    "Augmentation",
    "Bounds",
    "DEFAULT_EXPORTS",
    "DEFAULT_STUDENT",
    "DEFAULT_TEXT_STUDENT",
    "ERROR_CODES",
    "EXPORT_FORMATS",
    "ErrorCode",
    "ExportFormat",
    "HYPERPARAMETERS",
    "HYPERPARAMETERS_BY_NAME",
    "Hyperparameter",
    "InvalidHyperparameters",
    "JOB_STATUSES",
    "JobStatus",
    "LOSSES",
    "Loss",
    "PHASES",
    "Phase",
    "STUDENT_ARCHITECTURES",
    "SizeParameter",
    "StudentArchitecture",
    "TERMINAL",
    "TEXT_ARCHITECTURES",
    "UPLOAD_STATUSES",
    "UploadStatus",
    "check_augmentation",
    "check_student_parameters",
    "default_student_for",
    "validate_hyperparameters",
]
