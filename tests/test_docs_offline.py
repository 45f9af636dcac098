"""What a newcomer meets first: /docs draws offline with an Authorize button, the OpenAPI examples are true to
their schemas, a malformed JSON body says what is wrong, and every operation has a short, stable id.

The app runs in process (TestClient) on a migrated SQLite database: no network, no worker.
"""

from __future__ import annotations

import json
import re

import jsonschema_rs
import pytest
from fastapi.testclient import TestClient

from tests.support.rows import in_process_database

# The ids generated clients name their methods after: renaming one breaks those clients.
OPERATION_IDS = {
    ("get", "/healthz"): "health_live",
    ("get", "/readyz"): "health_ready",
    ("get", "/metrics"): "metrics_get",
    ("post", "/v1/models"): "models_create",
    ("get", "/v1/models"): "models_list",
    ("get", "/v1/models/{model_id}"): "models_get",
    ("delete", "/v1/models/{model_id}"): "models_delete",
    ("post", "/v1/datasets"): "datasets_create",
    ("get", "/v1/datasets"): "datasets_list",
    ("get", "/v1/datasets/{dataset_id}"): "datasets_get",
    ("delete", "/v1/datasets/{dataset_id}"): "datasets_delete",
    ("post", "/v1/uploads"): "uploads_create",
    ("post", "/v1/uploads/{upload_id}/complete"): "uploads_complete",
    ("delete", "/v1/uploads/{upload_id}"): "uploads_delete",
    ("post", "/v1/jobs"): "jobs_create",
    ("get", "/v1/jobs"): "jobs_list",
    ("get", "/v1/jobs/{job_id}"): "jobs_get",
    ("post", "/v1/jobs/{job_id}/cancel"): "jobs_cancel",
    ("get", "/v1/jobs/{job_id}/events"): "jobs_events_list",
    ("get", "/v1/jobs/{job_id}/events/stream"): "jobs_events_stream",
    ("get", "/v1/jobs/{job_id}/artifacts"): "jobs_artifacts_list",
    ("get", "/v1/jobs/{job_id}/artifacts/{name}"): "jobs_artifacts_get",
    ("get", "/v1/jobs/{job_id}/report"): "jobs_report_get",
    ("get", "/v1/jobs/{job_id}/report.html"): "jobs_report_html_get",
    ("get", "/v1/webhooks/secret"): "webhooks_secret_get",
    ("post", "/v1/webhooks/secret/rotate"): "webhooks_secret_rotate",
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """(client with a valid key, the key)."""
    from app.auth import create_key
    from app.main import create_app

    tmp = tmp_path_factory.mktemp("docs")
    with pytest.MonkeyPatch.context() as mp, in_process_database(tmp, mp) as sessionmaker:
        with sessionmaker() as session:
            key = create_key(session, "docs")
        client = TestClient(create_app(), raise_server_exceptions=False, headers={"Authorization": f"Bearer {key}"})
        yield client, key


@pytest.fixture(scope="module")
def openapi(env) -> dict:
    client, _key = env
    resp = client.get("/openapi.json")
    assert resp.status_code == 200
    return resp.json()


def _error(resp, status: int, code: str) -> str:
    assert resp.status_code == status, resp.text[:2000]
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    return body["error"]["message"]


def _operations(openapi: dict):
    for path, item in openapi["paths"].items():
        for method, op in item.items():
            yield method, path, op


# --- /docs works offline ---------------------------------------------------------------------------------------

EXPECTED_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


def test_docs_page_loads_only_assets_the_service_serves_itself(env):
    client, _key = env
    page = client.get("/docs", headers={"Authorization": ""})  # a browser opening /docs sends no key
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", page.text)
    urls += re.findall(r"""url:\s*["']([^"']+)["']""", page.text)
    assert any(u.endswith(".js") for u in urls) and any(u.endswith(".css") for u in urls), urls
    # Same origin: a path on this service, never a CDN (`//host/...` or `https://...`).
    offsite = [u for u in urls if not u.startswith("/") or u.startswith("//")]
    assert offsite == [], f"/docs loads from elsewhere: {offsite}"
    assert "cdn" not in page.text.lower()
    for url in urls:
        resp = client.get(url, headers={"Authorization": ""})
        assert resp.status_code == 200, (url, resp.status_code)
        suffix = url[url.rfind(".") :]
        expected = EXPECTED_TYPES.get(suffix, "application/json")
        assert expected in resp.headers["content-type"], (url, resp.headers["content-type"])
        assert len(resp.content) > 100, url
    bundle = next(u for u in urls if u.endswith(".js"))
    assert b"SwaggerUIBundle" in client.get(bundle).content


def test_the_swagger_ui_files_carry_their_licence():
    from app.main import DOCS_ASSETS

    assert "Apache License" in (DOCS_ASSETS / "LICENSE").read_text()
    assert "swagger-ui-dist" in (DOCS_ASSETS / "VERSION.txt").read_text()


def test_a_missing_docs_asset_is_a_404_in_the_error_envelope(env):
    client, _key = env
    _error(client.get("/docs/assets/nope.js"), 404, "not_found")


# --- Authorize: HTTP bearer security, not a header parameter -------------------------------------------------


def test_openapi_declares_bearer_security_and_no_authorization_parameter(openapi):
    schemes = openapi["components"]["securitySchemes"]
    bearer = [name for name, s in schemes.items() if s.get("type") == "http" and s.get("scheme") == "bearer"]
    assert bearer, schemes
    for method, path, op in _operations(openapi):
        params = [p["name"].lower() for p in op.get("parameters", [])]
        assert "authorization" not in params, f"{method} {path} has an authorization parameter"
        security = op.get("security", [])
        if path.startswith("/v1/"):
            assert any(set(req) & set(bearer) for req in security), f"{method} {path}: {security}"
            assert "401" in op["responses"], f"{method} {path}"
        else:
            assert security == [], f"{method} {path} needs no key: {security}"


@pytest.mark.parametrize(
    "header, words",
    [
        (None, "missing Authorization"),
        ("Basic dXNlcjpwYXNz", "malformed"),
        ("Bearer ", "malformed"),
        ("Bearer dk_wrong", "invalid or revoked"),
    ],
)
def test_a_missing_or_bad_key_still_answers_the_401_envelope(env, header, words):
    client, _key = env
    anonymous = TestClient(client.app, raise_server_exceptions=False)
    resp = anonymous.get("/v1/jobs", headers={"Authorization": header} if header is not None else {})
    assert words in _error(resp, 401, "unauthorized")
    assert client.get("/v1/jobs").status_code == 200


# --- examples are true to their schemas ---------------------------------------------------------------------


def _examples(node, where: str):
    """(where, subschema, example) for every `example`/`examples` in a schema tree."""
    if isinstance(node, dict):
        if isinstance(node.get("examples"), list) and (
            "type" in node or "properties" in node or "$ref" in node or "anyOf" in node or "allOf" in node
        ):
            for i, example in enumerate(node["examples"]):
                yield f"{where}.examples[{i}]", node, example
        for key, value in node.items():
            if key not in ("examples", "example"):
                yield from _examples(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _examples(value, f"{where}[{i}]")


def _media_examples(openapi: dict):
    """(where, schema, example) for examples beside a schema in request bodies and responses."""
    for method, path, op in _operations(openapi):
        bodies = [("requestBody", op.get("requestBody", {}))]
        bodies += [(f"responses.{code}", r) for code, r in op["responses"].items()]
        for name, body in bodies:
            for media, spec in body.get("content", {}).items():
                if "schema" in spec and "example" in spec:
                    yield f"{method} {path} {name} {media}", spec["schema"], spec["example"]


def test_every_example_validates_against_its_own_schema(openapi):
    components = openapi["components"]
    found = list(_examples(components["schemas"], "components.schemas")) + list(_media_examples(openapi))
    assert len(found) >= 8, found
    wrong = []
    for where, schema, example in found:
        validator = jsonschema_rs.Draft202012Validator({**schema, "components": components}, validate_formats=True)
        errors = [e.message for e in validator.iter_errors(example)]
        if errors:
            wrong.append(f"{where}: {errors[:3]}")
    assert wrong == []


def test_examples_keep_their_nulls(openapi):
    """FastAPI drops None from the document; an example's null fields are part of the shape it shows."""
    job = openapi["components"]["schemas"]["JobPublic"]["examples"][0]
    assert job["finished_at"] is None and job["error"] is None and "eval_dataset_id" in job
    report = openapi["components"]["schemas"]["Report"]["examples"][0]
    assert report["baseline"] is None


def test_each_resource_example_shows_that_resource(openapi):
    """DatasetPublic's example is a dataset (it used to be ModelPublic's, a model)."""
    schemas = openapi["components"]["schemas"]
    prefixes = {"ModelPublic": "mdl_", "DatasetPublic": "dst_", "JobPublic": "job_"}
    for name, prefix in prefixes.items():
        examples = schemas[name].get("examples") or []
        assert examples, name
        for example in examples:
            assert example["id"].startswith(prefix), (name, example["id"])
    dataset = schemas["DatasetPublic"]["examples"][0]
    assert dataset["format"] in ("npz", "csv", "jsonl", "parquet", "image_folder")
    assert {"rows", "num_classes"} <= set(dataset["info"])


# --- a malformed JSON body -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, words",
    [
        (b'{"teacher_id": ', "line 1 column 16"),
        (b'{\n  "teacher_id": "mdl_x",\n  "train_dataset_id": "dst_x"\n  "baseline": true\n}', "line 4 column 3"),
        (b"teacher_id=mdl_x", "line 1 column 1"),
        (b'{"teacher_id": "\xff"}', "UTF-8"),
        (b"[" * 100_000, "nested too deeply"),
    ],
)
def test_a_malformed_json_body_is_a_400_that_says_what_is_wrong(env, body, words):
    client, _key = env
    resp = client.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
    message = _error(resp, 400, "invalid_json")
    assert message.startswith("the request body is not valid JSON"), message
    assert words in message, message


def test_well_formed_json_of_the_wrong_shape_is_still_a_422(env):
    client, _key = env
    resp = client.post("/v1/jobs", content=json.dumps({"teacher_id": 3}), headers={"Content-Type": "application/json"})
    assert "train_dataset_id" in _error(resp, 422, "invalid_request")


def test_openapi_declares_the_400_on_every_json_body_operation(openapi):
    json_ops = [
        (method, path, op)
        for method, path, op in _operations(openapi)
        if "application/json" in op.get("requestBody", {}).get("content", {})
    ]
    assert json_ops
    for method, path, op in json_ops:
        declared = op["responses"].get("400")
        assert declared, f"{method} {path} does not declare its 400"
        assert "invalid_json" in declared["description"]
        schema = declared["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorResponse"}


# --- operation ids -------------------------------------------------------------------------------------------


def test_every_operation_has_its_short_explicit_id(openapi):
    ids = {(method, path): op.get("operationId") for method, path, op in _operations(openapi)}
    assert ids == OPERATION_IDS
