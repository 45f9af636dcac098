"""Service settings, read from DISTILLERY_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the service; the embedded defaults need no servers."""

    model_config = SettingsConfigDict(env_prefix="DISTILLERY_", extra="ignore")

    # Everything local (SQLite file, embedded broker, artifacts) lives under data_dir by default.
    data_dir: Path = Path(".distillery")
    database_url: str | None = None  # default: sqlite:///<data_dir>/distillery.db
    broker_url: str | None = None  # default: kombu's SQLAlchemy transport on <data_dir>/broker.db
    storage_dir: Path | None = None  # default: <data_dir>/storage
    # An S3-compatible object store for uploads and artifacts (s3://bucket/prefix); None keeps them in storage_dir.
    # Endpoint, region and credentials come from the standard AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID and
    # AWS_SECRET_ACCESS_KEY, which s3_endpoint_url overrides; work files, checkpoints and caches stay local.
    storage_url: str | None = None
    s3_endpoint_url: str | None = None
    # Artifact downloads answer 307 to a presigned URL instead of streaming through the API.
    storage_presign: bool = False
    # Stored files a worker has fetched are kept in <storage_dir>/store-cache up to this size (oldest out first).
    store_cache_bytes: int = 50 * 1024**3
    max_upload_bytes: int = 2 * 1024**3
    # Presigned multipart uploads (POST /v1/uploads, object store only): the size of each part (at least S3's
    # 5 MiB; raised for a file that would need more than 10,000 parts), and how long the part URLs and the
    # unfinished upload last before the reaper aborts it.
    direct_upload_part_bytes: int = Field(64 * 1024**2, ge=5 * 1024**2)
    direct_upload_expiry_s: int = Field(24 * 3600, gt=0, le=7 * 24 * 3600)
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # The GPUs this worker advertises and serves (its resource class: 0 is a CPU worker); None counts the GPUs the
    # host shows it (NVIDIA device nodes, narrowed by CUDA_VISIBLE_DEVICES) without initialising CUDA.
    worker_gpus: int | None = Field(None, ge=0)
    # A worker heartbeat older than this makes /readyz fail.
    worker_heartbeat_timeout_s: float = 60.0
    worker_heartbeat_interval_s: float = 10.0
    # Hard cap on one job's run time; also the Celery time limit (see worker/celery_app.py).
    job_time_limit_s: int = 24 * 3600
    # Redis re-delivers an unacknowledged message after this; it must exceed job_time_limit_s,
    # else a long job's message is handed to a second worker (the row claim still stops it running twice).
    broker_visibility_timeout_s: int = 25 * 3600
    progress_interval_s: float = 1.0
    log_level: str = "INFO"
    # Webhooks: targets on loopback, private or link-local addresses are refused unless this is true.
    webhook_allow_private: bool = False
    # A failed delivery is retried after base, 2 * base, 4 * base, ... seconds (capped), up to max attempts.
    webhook_retry_base_s: float = 10.0
    webhook_retry_max_delay_s: float = 3600.0
    webhook_max_attempts: int = 8
    webhook_timeout_s: float = 10.0
    # Leases: a running job's heartbeat is renewed every worker_heartbeat_interval_s; one older than
    # lease_timeout_s means its worker is gone, and the reaper (a loop in every worker, each
    # reaper_interval_s) requeues the job to resume from its checkpoint; the max_attempts-th lost worker fails
    # it. Jobs handed back on SIGTERM (preemption, a deploy) are not lost: those attempts do not count.
    lease_timeout_s: float = 120.0
    # A job asked to stop (cancelled, reassigned, or past its max_runtime_s) whose training has not come back
    # from the model's code for this long is stuck in it (an uploaded TorchScript student or an in-process
    # teacher can loop forever): the worker records it and exits with code 70, for its supervisor (`up`,
    # Docker's restart policy) to start a fresh one. The solo pool enforces no Celery time limit itself.
    stuck_job_grace_s: float = 300.0
    reaper_interval_s: float = 15.0
    max_attempts: int = 3
    # A queued job or a validating upload whose message may have been lost is sent again after this.
    resend_after_s: float = 600.0
    # Per-tenant cap on queued plus running jobs (429 beyond it).
    max_active_jobs_per_tenant: int = 100
    # Files of jobs that ended more than this many days ago are removed; None keeps them for ever.
    retention_days: float | None = None

    # The trust boundary (DESIGN.md): uploads are opened only in sandboxed children (worker/sandbox/).
    # The mechanism: the best that works here (auto), or one named.
    sandbox: Literal["auto", "bwrap", "unshare", "none"] = "auto"
    # A delegated cgroup v2 folder (writable, +memory +pids in its subtree_control): each child gets its own
    # memory.max and pids.max under it; the only host-memory cap a GPU child has.
    sandbox_cgroup: Path | None = None
    # Lower every child's wall clock, CPU time (RLIMIT_CPU) and memory below what the job or upload would get.
    sandbox_wall_s: float | None = Field(None, gt=0)
    sandbox_cpu_s: int | None = Field(None, gt=0)
    sandbox_memory_bytes: int | None = Field(None, gt=0)
    # Without a working bubblewrap, code-bearing formats (TorchScript, .pt2, uploaded students) are refused once a
    # second tenant exists, unless this is true.
    allow_unsandboxed: bool = False
    # One upload's validation child: wall clock (it never blocks another upload for longer) and memory.
    validation_timeout_s: float = 120.0
    validation_memory_bytes: int = 4 * 1024**3
    # One job child's memory (RLIMIT_AS on the CPU; a delegated cgroup's memory.max on a GPU).
    job_memory_bytes: int = 16 * 1024**3
    # Caps on what an upload or a job may ask for; past one, the upload is `invalid` or the request a 4xx,
    # with a message that names the setting.
    max_classes: int = 10_000
    max_example_elements: int = 16_777_216
    max_dataset_bytes: int = 8 * 1024**3
    max_image_size: int = 1024
    max_tokens: int = 8192
    max_student_parameters: int = 100_000_000

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file in data_dir."""
        return self.database_url or f"sqlite:///{(self.data_dir / 'distillery.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        """The broker URL, defaulting to kombu's SQLAlchemy transport on a SQLite file."""
        return self.broker_url or f"sqla+sqlite:///{(self.data_dir / 'broker.db').resolve()}"

    @property
    def resolved_storage_dir(self) -> Path:
        """Where uploads and artifacts are kept."""
        return (self.storage_dir or self.data_dir / "storage").resolve()


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings instance."""
    return Settings()
