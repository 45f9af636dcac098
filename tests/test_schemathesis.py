"""Schemathesis, stateful, against a live embedded service with two tenants (issue 11, point 12).

It follows the OpenAPI links from each create and list to the operations that take the ids they answer with, so
every GET, DELETE, cancel, events, artifacts and report operation is reached with real ids, not guessed ones.
Checks: not_a_server_error, status_code_conformance and response_schema_conformance on every response. Every
response the first tenant gets for one of its own ids is asked again with the second tenant's key: it must be 404.
How many cases reached each operation, and with a real id, is printed (run with -s to see it).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Flaky
from schemathesis.checks import not_a_server_error
from schemathesis.engine.errors import is_inconsistent_replay
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from tests.support.service import Client, running_service

pytestmark = pytest.mark.slow

SCENARIOS = 60
ROUNDS = 3
SINGLE_EXAMPLES = 30
STEPS = 12
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
JOBS_CREATE = "POST /v1/jobs"
STREAM = "GET /v1/jobs/{job_id}/events/stream"


def _teacher(path, seed: int):
    """A tiny TorchScript classifier of 4 features into 3 classes (its bytes differ by seed)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    torch.jit.save(torch.jit.script(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))), str(path))
    return path


def _seed_tenant(svc, key: str, folder, seed: int) -> dict:
    """A ready teacher and dataset, a succeeded job on them (report, artifacts), then a spare model and dataset."""
    client = Client(svc.url, key)
    rng = np.random.default_rng(seed)
    data = folder / f"data-{seed}.npz"
    np.savez(data, x=rng.normal(size=(60, 4)).astype(np.float32), y=rng.integers(0, 3, 60))
    model = client.ready_upload("models", _teacher(folder / f"teacher-{seed}.pt", seed))
    dataset = client.ready_upload("datasets", data)
    body = {
        "teacher_id": model["id"],
        "train_dataset_id": dataset["id"],
        "hyperparameters": {"epochs": 1, "recipe": "plain"},
    }
    created = client.http.post("/v1/jobs", json=body)
    assert created.status_code == 201, created.text
    job = client.wait_job(created.json()["id"], timeout=300)
    assert job["status"] == "succeeded", job
    # Newest, so that a list's first row (what the list links hand on) is one a DELETE may take.
    client.ready_upload("models", _teacher(folder / f"spare-{seed}.pt", seed + 100))
    spare = folder / f"spare-{seed}.npz"
    np.savez(spare, x=rng.normal(size=(40, 4)).astype(np.float32), y=rng.integers(0, 3, 40))
    client.ready_upload("datasets", spare)
    return {"model": model["id"], "dataset": dataset["id"], "job": job["id"]}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("schemathesis")
    env = {"DISTILLERY_MAX_UPLOAD_BYTES": str(1024**2), "DISTILLERY_MAX_ACTIVE_JOBS_PER_TENANT": "4"}
    with running_service(tmp, extra_env=env) as svc:
        keys = {tenant: svc.new_key(tenant) for tenant in ("alice", "bob")}
        seeds = {tenant: _seed_tenant(svc, keys[tenant], tmp, i) for i, tenant in enumerate(keys)}
        yield svc, keys, seeds


class Tally:
    """Per operation: how many cases reached it, their statuses, and how many named a real row."""

    def __init__(self) -> None:
        self.statuses: dict[str, Counter] = defaultdict(Counter)
        self.real: Counter = Counter()
        self.hidden_from_other_tenant: Counter = Counter()
        # Failures are collected, not raised: Hypothesis would replay the scenario to confirm one, and against a
        # live service (new ids, jobs that have moved on) the replay draws differently and ends as "flaky".
        self.failures: list[str] = []

    def record(self, case, response) -> None:
        label = case.operation.label
        self.statuses[label][response.status_code] += 1
        if _names_a_real_row(case, response):
            self.real[label] += 1

    def table(self) -> str:
        rows = [f"{'operation':<48} {'cases':>5} {'real':>5} {'other':>5}  statuses"]
        for label in sorted(self.statuses):
            counts = self.statuses[label]
            statuses = " ".join(f"{code}x{n}" for code, n in sorted(counts.items()))
            rows.append(
                f"{label:<48} {sum(counts.values()):>5} {self.real[label]:>5} "
                f"{self.hidden_from_other_tenant[label]:>5}  {statuses}"
            )
        return "\n".join(rows)


def _error_code(response) -> str | None:
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def _names_a_real_row(case, response) -> bool:
    """Whether the operation's logic ran on a real row: a success, or an answer other than `not found`."""
    if response.status_code < 300:
        return True
    if not case.path_parameters:
        return False
    # A 409 is about the row's state; a 404 whose code is not `not_found` (report_not_ready, an artifact not
    # there) found the job first. A 401 or 422 never got as far as the row.
    return response.status_code == 409 or (response.status_code == 404 and _error_code(response) != "not_found")


def _workflow(schema, svc, keys: dict, seeds: dict, tally: Tally):
    mine, other = f"Bearer {keys['alice']}", f"Bearer {keys['bob']}"
    finished = seeds["alice"]["job"]

    class Workflow(schema.as_state_machine()):
        def _step(self, input):
            # Whatever a step raises is a finding to collect (see Tally.failures), not a run to replay.
            try:
                return super()._step(input)
            except Exception as exc:
                tally.failures.append(f"{input.case.operation.label}: {type(exc).__name__}: {str(exc)[:1500]}")
                return None

        def get_call_kwargs(self, case):
            return {"headers": {"Authorization": mine}}

        def before_call(self, case):
            _use_real_uploads(case, seeds["alice"])
            if case.operation.label == STREAM and not _has_ended(svc.url, mine, case.path_parameters.get("job_id")):
                # A live stream lasts as long as its job; a queued job's would outlast the test.
                case.path_parameters["job_id"] = finished

        def after_call(self, response, case):
            tally.record(case, response)
            # Only an answer about the tenant's own row (a success, or 409 about its state) is asked again.
            if case.path_parameters and (response.status_code < 300 or response.status_code == 409):
                hidden = case.call(headers={"Authorization": other})
                tally.hidden_from_other_tenant[case.operation.label] += 1
                if hidden.status_code != 404:
                    tally.failures.append(f"{case.operation.label}: the other tenant got {hidden.status_code}")

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            try:
                case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs or None)
            except Exception as exc:  # every check's failure, with the case that met it
                tally.failures.append(f"{case.operation.label} -> {response.status_code}: {str(exc)[:1500]}")

    return Workflow


def _use_real_uploads(case, seed: dict) -> None:
    """Generated ids name nothing: a job is made on the tenant's ready uploads, the rest as generated."""
    if case.operation.label == JOBS_CREATE and isinstance(case.body, dict):
        case.body.update(teacher_id=seed["model"], train_dataset_id=seed["dataset"])
        if case.body.get("eval_dataset_id") is not None:
            case.body["eval_dataset_id"] = seed["dataset"]


def _fuzz_one(operation, svc, keys: dict, seeds: dict, tally: Tally) -> None:
    """One operation fuzzed a case at a time, on the first tenant's key."""

    @settings(max_examples=SINGLE_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def check(case):
        _use_real_uploads(case, seeds["alice"])
        response = case.call(base_url=svc.url, headers={"Authorization": f"Bearer {keys['alice']}"})
        tally.record(case, response)
        try:
            case.validate_response(response, checks=CHECKS)
        except Exception as exc:  # collected like the stateful run's
            tally.failures.append(f"{case.operation.label} -> {response.status_code}: {str(exc)[:1500]}")

    check()


def _has_ended(url: str, authorization: str, job_id) -> bool:
    if not isinstance(job_id, str):
        return False
    try:
        resp = httpx.get(f"{url}/v1/jobs/{job_id}", headers={"Authorization": authorization}, timeout=30)
    except (httpx.HTTPError, UnicodeError):
        return False
    return resp.status_code == 200 and resp.json()["status"] in ("succeeded", "failed", "cancelled")


def _run_round(workflow) -> str:
    """One run of SCENARIOS scenarios; "cut short" when Hypothesis stopped it as flaky.

    Against a live service a scenario cannot be replayed exactly (new ids, jobs that moved on, a list's first row
    gone), and Hypothesis stops a run whose draws differ from an earlier one's. Schemathesis' own runner starts
    again in that case; so does this test, keeping the tally of every round.
    """
    try:
        workflow.run(
            settings=settings(
                max_examples=SCENARIOS,
                stateful_step_count=STEPS,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
                # A failure is collected when found (Tally.failures): no shrinking, no replay.
                phases=[Phase.generate],
            )
        )
    except Exception as exc:
        flaky = isinstance(exc, Flaky) or (isinstance(exc, BaseExceptionGroup) and exc.subgroup(Flaky) is not None)
        if not (flaky or is_inconsistent_replay(exc)):
            raise
        return "cut short"
    return "complete"


def _real_path_parameters(svc, key: str, seed: dict) -> dict:
    """The seeded tenant's real ids for every path parameter, an artifact name among them."""
    listed = httpx.get(
        f"{svc.url}/v1/jobs/{seed['job']}/artifacts", headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    listed.raise_for_status()
    return {
        "job_id": seed["job"],
        "model_id": seed["model"],
        "dataset_id": seed["dataset"],
        "name": listed.json()["data"][0]["name"],
        # No upload in progress can exist on the embedded (local) store, which answers POST /v1/uploads with 409:
        # these operations answer 404 here, and tests/test_direct_upload.py proves them on an object store.
        "upload_id": "upl_none",
    }


def _reach_each_by_id(schema, svc, keys: dict, seeds: dict, tally: Tally) -> None:
    """Every operation that takes an id, called once on the first tenant's real rows, then as the other tenant.

    The stateful rounds reach most of them through links, but whether a round follows a given link (the list of
    artifacts to one artifact, a finished job to its report page) is a draw: this pass makes the reach certain.
    Deletes come last, so that the reads before them find the rows.
    """
    real = _real_path_parameters(svc, keys["alice"], seeds["alice"])
    operations = [op.ok() for op in schema.get_all_operations() if "{" in op.ok().label]
    for operation in sorted(operations, key=lambda op: (op.method.upper() == "DELETE", op.label)):
        names = {p.name for p in operation.path_parameters}
        case = operation.Case(path_parameters={name: real[name] for name in names})
        response = case.call(base_url=svc.url, headers={"Authorization": f"Bearer {keys['alice']}"})
        tally.record(case, response)
        try:
            case.validate_response(response, checks=CHECKS)
        except Exception as exc:  # collected like the stateful run's
            tally.failures.append(f"{operation.label} -> {response.status_code}: {str(exc)[:1500]}")
        if response.status_code < 300 or response.status_code == 409:
            hidden = case.call(base_url=svc.url, headers={"Authorization": f"Bearer {keys['bob']}"})
            tally.hidden_from_other_tenant[operation.label] += 1
            if hidden.status_code != 404:
                tally.failures.append(f"{operation.label}: the other tenant got {hidden.status_code}")


def test_api_conforms_statefully_and_keeps_tenants_apart(live, tmp_path):
    svc, keys, seeds = live
    schema = schemathesis.openapi.from_url(f"{svc.url}/openapi.json")
    tally = Tally()
    workflow = _workflow(schema, svc, keys, seeds, tally)
    # First, one case at a time, the operations that take no id (job creation among them, while the seeded
    # uploads are there for it: a stateful DELETE may take them; health, metrics and webhooks, which no link
    # reaches); then the stateful rounds, whose links hand on real ids.
    for result in schema.get_all_operations():
        if "{" not in result.ok().label:
            _fuzz_one(result.ok(), svc, keys, seeds, tally)
    rounds = [_run_round(workflow) for _ in range(ROUNDS)]
    _reach_each_by_id(schema, svc, keys, seeds, tally)
    print(f"\nrounds: {rounds}\n" + tally.table())
    print("\n\n".join(tally.failures[:20]))
    (tmp_path / "schemathesis-counts.json").write_text(json.dumps({k: dict(v) for k, v in tally.statuses.items()}))
    operations = {op.ok().label for op in schema.get_all_operations()}
    # Direct uploads (POST /v1/uploads) need an object store: on this local one no id of theirs is ever real.
    by_id = {label for label in operations if "{" in label and "{upload_id}" not in label}
    assert tally.failures == []
    assert operations - set(tally.statuses) == set(), "operations never called"
    assert {label for label in by_id if tally.real[label] == 0} == set(), "operations never reached with a real id"
    assert {label for label in by_id if tally.hidden_from_other_tenant[label] == 0} == set()
