"""Wire shapes of the v1 API (DESIGN.md, "Wire contract"): what the server sends and the client SDK reads.

common    error envelope, pages, timestamps, health, webhook secret
students  StudentSpec, one variant per built-in architecture (from contract.students' table)
jobs      JobCreate, Hyperparameters, Resources, JobPublic
uploads   ModelPublic, DatasetPublic
direct_uploads  DirectUploadPublic, DirectUploadComplete (presigned multipart uploads)
events    EventPublic, ArtifactPublic and their pages
report    Report
"""

from contract.wire.common import (
    ErrorDetail,
    ErrorResponse,
    Health,
    OutModel,
    Page,
    Timestamp,
    WebhookSecret,
    webhook_url_problem,
)
from contract.wire.direct_uploads import CompletedPart, DirectUploadComplete, DirectUploadPublic, UploadPart
from contract.wire.events import ArtifactPublic, ArtifactsPage, EventPublic, EventsPage
from contract.wire.jobs import (
    Hyperparameters,
    JobCreate,
    JobPublic,
    Metrics,
    Progress,
    ResolvedHyperparameters,
    Resources,
)
from contract.wire.lm import LM_METHODS, LOGIT_METHODS, LMOptions
from contract.wire.report import (
    REPORT_EXAMPLE,
    BaselineScores,
    HistoryEpoch,
    Latency,
    Report,
    SearchCandidate,
    StudentScores,
    StudentSearchReport,
    TeacherScores,
)
from contract.wire.students import (
    STUDENT_VARIANTS,
    SearchedStudent,
    StudentSearch,
    StudentSpec,
    UploadedStudent,
    default_student,
)
from contract.wire.uploads import DatasetPublic, ModelPublic, UploadPublic

__all__ = [
    "LM_METHODS",
    "LOGIT_METHODS",
    "LMOptions",
    "REPORT_EXAMPLE",
    "STUDENT_VARIANTS",
    "ArtifactPublic",
    "ArtifactsPage",
    "BaselineScores",
    "CompletedPart",
    "DatasetPublic",
    "DirectUploadComplete",
    "DirectUploadPublic",
    "ErrorDetail",
    "ErrorResponse",
    "EventPublic",
    "EventsPage",
    "Health",
    "HistoryEpoch",
    "SearchCandidate",
    "StudentSearchReport",
    "Hyperparameters",
    "JobCreate",
    "JobPublic",
    "Latency",
    "Metrics",
    "ModelPublic",
    "OutModel",
    "Page",
    "Progress",
    "Report",
    "ResolvedHyperparameters",
    "Resources",
    "StudentScores",
    "StudentSpec",
    "TeacherScores",
    "Timestamp",
    "UploadPart",
    "UploadPublic",
    "UploadedStudent",
    "SearchedStudent",
    "StudentSearch",
    "WebhookSecret",
    "default_student",
    "webhook_url_problem",
]
