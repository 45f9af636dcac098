"""The API document as a generated client reads it (issue 11, point 13): typed shapes, one bearer scheme, a
binary download with its headers, a separate server-sent events operation, a named Report, StudentSpec as a union
discriminated by `architecture`, one cursor type, and links from each create to what takes its id."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from contract import JOB_STATUSES, STUDENT_ARCHITECTURES, UPLOAD_STATUSES
from tests.support.rows import in_process_database, upload_row

PUBLIC = ("JobPublic", "ModelPublic", "DatasetPublic", "ArtifactPublic", "EventPublic")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """(client with tenant a's key, tenant b's key, a's job id with three events)."""
    from app.auth import create_key, tenant_for_key
    from app.main import create_app
    from app.models import Dataset, Job, JobEvent, Model

    tmp = tmp_path_factory.mktemp("client_view")
    with pytest.MonkeyPatch.context() as mp, in_process_database(tmp, mp) as sessionmaker:
        with sessionmaker() as session:
            key, other = create_key(session, "a"), create_key(session, "b")
            tenant_id = tenant_for_key(session, key).id
            model, data = upload_row(Model, tenant_id, status="ready"), upload_row(Dataset, tenant_id, status="ready")
            session.add_all([model, data])
            job = Job(
                id="job_0000000000000000000000aa",
                tenant_id=tenant_id,
                status="succeeded",
                phase=None,
                attempt=1,
                teacher_id=model.id,
                train_dataset_id=data.id,
                student={"architecture": "mlp", "hidden_sizes": [8]},
                hyperparameters={"epochs": 2, "patience": None},
                export=["onnx"],
                finished_at=datetime.now(UTC),
            )
            session.add(job)
            session.flush()
            for i in range(3):
                session.add(JobEvent(job_id=job.id, type="progress", message=f"step {i}", data={"step": i}))
            session.commit()
        client = TestClient(create_app(), raise_server_exceptions=False, headers={"Authorization": f"Bearer {key}"})
        yield client, other, job.id


@pytest.fixture(scope="module")
def openapi(env) -> dict:
    return env[0].get("/openapi.json").json()


def _operations(openapi: dict) -> dict[str, dict]:
    return {op["operationId"]: op for item in openapi["paths"].values() for op in item.values()}


def _untyped(schema: dict) -> bool:
    """A property a generator can only call Any: no type, no reference, no union of either."""
    keys = {"type", "$ref", "anyOf", "oneOf", "allOf", "const", "enum"}
    return not keys & set(schema)


def test_every_field_of_the_public_shapes_has_a_type(openapi):
    schemas = openapi["components"]["schemas"]
    blank = [f"{name}.{field}" for name in PUBLIC for field, s in schemas[name]["properties"].items() if _untyped(s)]
    assert blank == []
    job = schemas["JobPublic"]["properties"]
    assert job["status"] == {"$ref": "#/components/schemas/JobStatus"}
    assert schemas["JobStatus"]["enum"] == list(JOB_STATUSES)
    assert schemas["UploadStatus"]["enum"] == list(UPLOAD_STATUSES)
    assert job["created_at"] == {"type": "string", "format": "date-time", "title": "Created At"}
    assert schemas["EventPublic"]["properties"]["created_at"]["format"] == "date-time"


def test_timestamps_and_statuses_keep_their_wire_form(env):
    client, _other, job_id = env
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["finished_at"].endswith("Z")
    assert job["student"] == {"architecture": "mlp", "hidden_sizes": [8]}  # no nulls for unset parameters
    assert job["hyperparameters"] == {"epochs": 2, "patience": None}  # the stored keys, no more


def test_one_bearer_scheme_and_no_authorization_parameter(openapi):
    assert openapi["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    for op_id, op in _operations(openapi).items():
        names = {p["name"].lower() for p in op.get("parameters", [])}
        assert "authorization" not in names, op_id


def test_the_download_is_binary_with_its_checksum_header(openapi):
    ok = _operations(openapi)["jobs_artifacts_get"]["responses"]["200"]
    assert ok["content"] == {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    assert "X-Checksum-Sha256" in ok["headers"]
    assert "Retry-After" in _operations(openapi)["jobs_create"]["responses"]["429"]["headers"]


def test_the_event_stream_is_its_own_operation(openapi):
    stream = _operations(openapi)["jobs_events_stream"]
    assert list(stream["responses"]["200"]["content"]) == ["text/event-stream"]
    event = stream["responses"]["200"]["content"]["text/event-stream"]["itemSchema"]
    assert {"$ref": "#/components/schemas/EventPublic"} in event["properties"]["data"]["contentSchema"]["anyOf"]
    assert list(_operations(openapi)["jobs_events_list"]["responses"]["200"]["content"]) == ["application/json"]


def test_the_report_is_a_named_open_schema(openapi):
    ok = _operations(openapi)["jobs_report_get"]["responses"]["200"]["content"]["application/json"]
    assert ok["schema"] == {"$ref": "#/components/schemas/Report"}
    report = openapi["components"]["schemas"]["Report"]
    assert report["additionalProperties"] is True
    assert {"job_id", "teacher", "student", "compression_ratio", "history"} <= set(report["required"])


def test_student_spec_is_discriminated_by_architecture_with_every_size_parameter(openapi):
    schemas = openapi["components"]["schemas"]
    union = next(s for s in schemas["StudentSpec"]["anyOf"] if "discriminator" in s)
    mapping = union["discriminator"]["mapping"]
    assert union["discriminator"]["propertyName"] == "architecture"
    assert set(mapping) == {a.name for a in STUDENT_ARCHITECTURES}
    for arch in STUDENT_ARCHITECTURES:
        variant = schemas[mapping[arch.name].rsplit("/", 1)[1]]
        assert set(variant["properties"]) == {"architecture", *arch.parameter_names}, arch.name
        assert variant["additionalProperties"] is False


def test_every_page_cursor_has_one_type(openapi):
    schemas = openapi["components"]["schemas"]
    pages = [name for name in schemas if name.startswith("Page_") or name in ("EventsPage", "ArtifactsPage")]
    cursors = {name: schemas[name]["properties"]["next_after"]["anyOf"] for name in pages}
    assert len(cursors) == 5 and all(c == [{"type": "string"}, {"type": "null"}] for c in cursors.values()), cursors
    after = next(p for p in _operations(openapi)["jobs_events_list"]["parameters"] if p["name"] == "after")
    assert after["schema"]["type"] == "string"


def test_events_page_through_with_the_string_cursor(env):
    client, _other, job_id = env
    first = client.get(f"/v1/jobs/{job_id}/events", params={"limit": 2}).json()
    assert isinstance(first["next_after"], str) and len(first["data"]) == 2
    rest = client.get(f"/v1/jobs/{job_id}/events", params={"after": first["next_after"]}).json()
    assert [e["message"] for e in first["data"] + rest["data"]] == ["step 0", "step 1", "step 2"]
    assert rest["next_after"] is None
    assert client.get(f"/v1/jobs/{job_id}/events", params={"after": "-1"}).status_code == 422


@pytest.mark.parametrize("how", ["stream operation", "Accept header"])
def test_the_stream_answers_on_both_paths(env, how):
    client, _other, job_id = env
    if how == "stream operation":
        resp = client.get(f"/v1/jobs/{job_id}/events/stream", params={"after": "1"})
    else:
        resp = client.get(f"/v1/jobs/{job_id}/events", params={"after": "1"}, headers={"Accept": "text/event-stream"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    assert [line for line in resp.text.splitlines() if line.startswith(("id:", "event:"))] == [
        "id: 2",
        "event: progress",
        "id: 3",
        "event: progress",
        "event: end",
    ]


def test_another_tenants_stream_is_missing(env):
    client, other, job_id = env
    resp = client.get(f"/v1/jobs/{job_id}/events/stream", headers={"Authorization": f"Bearer {other}"})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"


def test_each_create_links_to_the_operations_that_take_its_id(openapi):
    operations = _operations(openapi)
    expected = {
        "models_create": {"models_get", "models_delete"},
        "datasets_create": {"datasets_get", "datasets_delete"},
        "jobs_create": {
            "jobs_get",
            "jobs_cancel",
            "jobs_events_list",
            "jobs_events_stream",
            "jobs_artifacts_list",
            "jobs_report_get",
            "jobs_report_html_get",
        },
    }
    for source, targets in expected.items():
        links = operations[source]["responses"]["201"]["links"]
        assert {link["operationId"] for link in links.values()} == targets, source
    for source, op in operations.items():
        for status, response in op["responses"].items():
            for name, link in response.get("links", {}).items():
                target = operations[link["operationId"]]
                declared = {p["name"] for p in target.get("parameters", []) if p["in"] == "path"}
                assert set(link["parameters"]) == declared, (source, status, name)


def test_the_sdk_names_an_invalid_uploads_typed_error():
    """The SDK reads an upload's `error` as the contract's ErrorDetail (it used to call .get on a dict)."""
    from distillery_client import Distillery, DistilleryError, Model

    invalid = Model.model_validate(
        {
            "id": "mdl_1",
            "name": "teacher.pt",
            "format": "torchscript",
            "status": "invalid",
            "size_bytes": 1,
            "sha256": "0" * 64,
            "created_at": "2026-11-30T00:00:00Z",
            "error": {"code": "invalid_model", "message": "the archive holds no code"},
        }
    )
    with pytest.raises(DistilleryError) as raised:
        Distillery("http://127.0.0.1:9", "dk_unused").wait_ready(invalid, timeout=1)
    assert raised.value.code == "invalid_model" and "the archive holds no code" in raised.value.message


def test_an_empty_idempotency_key_is_refused(env):
    """Schemathesis found it: an empty Idempotency-Key sent twice answered 500 (a unique-constraint error)."""
    client, _other, _job_id = env
    resp = client.post("/v1/jobs", json={"teacher_id": "m", "train_dataset_id": "d"}, headers={"Idempotency-Key": ""})
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "invalid_request"
