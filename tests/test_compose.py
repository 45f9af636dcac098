"""docker-compose.yml stays true to the code: settings names, commands, dependencies, GPU and storage.

Docker is not needed: the file is parsed and checked against app.settings.Settings and the CLI.
"""

from __future__ import annotations

import shlex
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest
import yaml

from app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
SERVICES = {"postgres", "redis", "migrate", "api", "worker"}
DISTILLERY = ("migrate", "api", "worker")
PREFIX = Settings.model_config.get("env_prefix", "")
# Environment name -> Settings field, as pydantic-settings reads them (prefix + field name, any case).
ENV_TO_FIELD = {f"{PREFIX}{name}".upper(): name for name in Settings.model_fields}
SHARED = ("database_url", "broker_url", "data_dir", "storage_dir")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def environment(service: dict) -> dict[str, str]:
    """A service's environment as a dict, whichever of compose's two spellings it uses."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {k: (None if v is None else str(v)) for k, v in env.items()}


def settings_of(service: dict) -> dict[str, str]:
    """Settings field -> value for every DISTILLERY_* variable; fails on a name Settings does not have."""
    fields, unknown = {}, []
    for name, value in environment(service).items():
        if not name.upper().startswith(PREFIX.upper()):
            continue
        field = ENV_TO_FIELD.get(name.upper())
        if field is None:
            unknown.append(name)
        else:
            fields[field] = value
    assert not unknown, f"not fields of Settings (typo?): {unknown}; known: {sorted(ENV_TO_FIELD)}"
    return fields


def command(service: dict) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def depends(service: dict) -> dict[str, str]:
    """Dependency -> condition (the short list form means service_started)."""
    dep = service.get("depends_on") or {}
    if isinstance(dep, list):
        return dict.fromkeys(dep, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in dep.items()}


def mounts(service: dict) -> list[tuple[str, str]]:
    """(source, target) of each volume, short or long syntax."""
    out = []
    for vol in service.get("volumes") or []:
        if isinstance(vol, str):
            parts = vol.split(":")
            out.append((parts[0], parts[1]) if len(parts) > 1 else ("", parts[0]))
        else:
            out.append((vol.get("source", ""), vol["target"]))
    return out


def storage_path(fields: dict[str, str]) -> PurePosixPath:
    """Where Settings puts uploads and artifacts inside the container (resolved_storage_dir's rule)."""
    if fields.get("storage_dir"):
        return PurePosixPath(fields["storage_dir"])
    return PurePosixPath(fields.get("data_dir") or Settings.model_fields["data_dir"].default) / "storage"


def test_services_exist(services):
    assert SERVICES <= set(services), f"missing: {SERVICES - set(services)}"


def test_every_distillery_variable_is_a_setting(services):
    for name, service in services.items():
        fields = settings_of(service)
        # The values parse too (an int field given "eight" would fail here).
        Settings(**{k: v for k, v in fields.items() if v is not None})
        if name in DISTILLERY:
            assert fields, f"{name} sets no DISTILLERY_* variable"


def test_unknown_setting_names_are_rejected():
    """The check above is not vacuous: a typo or a name Settings lacks fails it."""
    for bad in ("DISTILLERY_DATABSE_URL", "DISTILLERY_WORKERS"):
        with pytest.raises(AssertionError, match=bad):
            settings_of({"environment": {bad: "x"}})
    assert settings_of({"environment": ["DISTILLERY_BROKER_URL=redis://r:6379/0", "OTHER=1"]}) == {
        "broker_url": "redis://r:6379/0"
    }


def test_processes_share_database_broker_and_storage(services):
    api, worker, migrate = (settings_of(services[n]) for n in ("api", "worker", "migrate"))
    for field in SHARED:
        assert api.get(field) == worker.get(field), f"api and worker disagree on {field}"
    assert migrate.get("database_url") == api.get("database_url"), "migrate must migrate the API's database"
    for field in ("database_url", "broker_url"):
        assert api.get(field), f"{field} not set: the embedded SQLite defaults do not work across containers"


def test_database_is_postgresql_and_broker_redis(services):
    fields = settings_of(services["api"])
    db, broker = urlsplit(fields["database_url"]), urlsplit(fields["broker_url"])
    assert db.scheme == "postgresql+psycopg", db.scheme
    assert db.hostname in services, f"database host {db.hostname} is not a compose service"
    assert broker.scheme in ("redis", "rediss"), broker.scheme
    assert broker.hostname in services, f"broker host {broker.hostname} is not a compose service"
    # The credentials and database name are the ones postgres is started with.
    pg = environment(services[db.hostname])
    assert (db.username, db.password, db.path.lstrip("/")) == (
        pg.get("POSTGRES_USER", "postgres"),
        pg.get("POSTGRES_PASSWORD"),
        pg.get("POSTGRES_DB", db.username),
    )


def test_commands(services):
    assert command(services["migrate"]) == ["distillery", "migrate"]
    api = command(services["api"])
    assert api[:2] == ["distillery", "api"]
    assert "--host" in api and api[api.index("--host") + 1] == "0.0.0.0", api
    assert command(services["worker"])[:2] == ["distillery", "worker"]


def test_startup_order(services):
    assert services["postgres"].get("healthcheck"), "postgres needs a healthcheck for service_healthy"
    assert depends(services["migrate"]).get("postgres") == "service_healthy"
    for name in ("api", "worker"):
        assert depends(services[name]).get("migrate") == "service_completed_successfully", name
    assert services["migrate"].get("restart", "no") == "no", "migrate is one-shot"


def test_worker_has_one_gpu(services):
    worker = services["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    gpus = [d for d in devices if "gpu" in d.get("capabilities", [])]
    assert len(gpus) == 1, devices
    gpu = gpus[0]
    assert gpu.get("driver", "nvidia") == "nvidia"
    # One GPU per worker container, pinned by id or counted.
    assert len(gpu.get("device_ids", [])) == 1 or str(gpu.get("count")) == "1", gpu
    assert environment(worker).get("CUDA_VISIBLE_DEVICES") == "0"


def test_storage_volume_is_shared(compose, services):
    api, worker = services["api"], services["worker"]
    path = storage_path(settings_of(api))
    assert path.is_absolute(), path
    sources = []
    for service in (api, worker):
        covering = [
            src
            for src, target in mounts(service)
            if path == PurePosixPath(target) or PurePosixPath(target) in path.parents
        ]
        assert covering, f"no volume mounted at {path} (or above it): {mounts(service)}"
        sources.append(covering[0])
    assert sources[0] == sources[1], f"api and worker mount different volumes: {sources}"
    assert sources[0] in (compose.get("volumes") or {}), f"{sources[0]} is not a named volume"


def test_the_worker_image_and_container_can_run_the_bubblewrap_sandbox(services):
    """Every upload runs under bubblewrap: the image installs it, the worker container may create namespaces."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "bubblewrap" in dockerfile and "apt-get install" in dockerfile
    options = set(services["worker"].get("security_opt") or [])
    assert {"seccomp=unconfined", "apparmor=unconfined"} <= options, options
    assert not services["worker"].get("privileged") and not services["worker"].get("cap_add")


def test_uploads_validate_on_their_own_worker_as_up_does(services):
    """A long training job never holds up a new upload: the GPU worker serves jobs, a CPU worker the uploads."""

    def queues(service: dict) -> set[str]:
        argv = command(service)
        return set(argv[argv.index("--queues") + 1].split(",")) if "--queues" in argv else {"jobs", "uploads"}

    assert queues(services["worker"]) == {"jobs"}
    uploads = [
        name
        for name, svc in services.items()
        if command(svc)[:2] == ["distillery", "worker"] and queues(svc) == {"uploads"}
    ]
    assert uploads, "no worker serves the uploads queue alone"
    assert "deploy" not in services[uploads[0]], "the uploads worker needs no GPU"
    assert {"seccomp=unconfined", "apparmor=unconfined"} <= set(services[uploads[0]].get("security_opt") or [])


def test_the_gpu_worker_serves_the_gpu_class_and_a_cpu_worker_the_cpu_class(services):
    """Resource classes: the GPU worker advertises one GPU (so `--queues jobs` means jobs and jobs.gpu); the CPU
    job worker, behind a profile, advertises none (jobs and jobs.cpu) and shares what the API has."""
    from worker.resources import job_queue_changes

    def job_queues(service: dict) -> list[str]:
        argv = command(service)
        consumed = argv[argv.index("--queues") + 1].split(",")
        gpus = int(settings_of(service)["worker_gpus"])
        add, drop = job_queue_changes(consumed, gpus)
        return sorted(q for q in consumed + add if q not in drop and q.startswith("jobs"))

    assert job_queues(services["worker"]) == ["jobs", "jobs.gpu"]
    cpu = [svc for svc in services.values() if command(svc)[:2] == ["distillery", "worker"] and "deploy" not in svc]
    cpu = [svc for svc in cpu if "jobs" in command(svc)[command(svc).index("--queues") + 1].split(",")]
    assert len(cpu) == 1 and cpu[0].get("profiles"), "a CPU job worker, off by default"
    assert job_queues(cpu[0]) == ["jobs", "jobs.cpu"]
    for field in SHARED:
        assert settings_of(cpu[0]).get(field) == settings_of(services["api"]).get(field), field
