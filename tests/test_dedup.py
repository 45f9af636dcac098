"""Uploads are content-addressed per tenant: the same bytes and options answer 200 with the existing object.

Through the real API and a real worker (embedded defaults).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.support.hostile import Linear, save_script
from tests.support.service import Client, running_service

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    with running_service(tmp_path_factory.mktemp("dedup")) as service:
        yield service


@pytest.fixture(scope="module")
def alice(svc) -> Client:
    return Client(svc.url, svc.new_key("alice"))


@pytest.fixture(scope="module")
def bob(svc) -> Client:
    return Client(svc.url, svc.new_key("bob"))


def _csv(path: Path, seed: int = 0, species: bool = False) -> Path:
    """Two features, `label` and `target` (integer classes); with `species`, a string column that fails validation."""
    rng = random.Random(seed)
    lines = ["f1,f2,label,target" + (",species" if species else "")]
    for _ in range(40):
        row = [round(rng.random(), 3), round(rng.random(), 3), rng.randint(0, 2), rng.randint(0, 1)]
        lines.append(",".join(map(str, row)) + (",setosa" if species else ""))
    path.write_text("\n".join(lines) + "\n")
    return path


def _stored(svc, tenant_dir_glob: str) -> list[Path]:
    return [p for p in (svc.data_dir / "storage").glob(tenant_dir_glob) if p.is_file()]


def _leftover_uploads(svc) -> list[Path]:
    return list((svc.data_dir / "storage" / "tmp").glob("upload-*"))


def test_the_same_model_twice_answers_200_with_the_same_id_and_stores_one_file(alice, svc, tmp_path):
    path = save_script(Linear(), tmp_path / "teacher.pt")
    first = alice.upload("models", path)
    assert first.status_code == 201, first.text
    model = alice.wait_upload("models", first.json()["id"])
    assert model["status"] == "ready", model
    again = alice.upload("models", path, name="another name")
    assert again.status_code == 200, again.text
    assert again.json()["id"] == model["id"] and again.json()["name"] == model["name"]
    assert [p.parent.name for p in _stored(svc, "*/models/*/*")] == [model["id"]]
    assert _leftover_uploads(svc) == [], "the streamed duplicate must be deleted"


def test_the_same_dataset_with_other_options_is_a_new_upload(alice, tmp_path):
    path = _csv(tmp_path / "d.csv")
    first = alice.ready_upload("datasets", path)
    again = alice.upload("datasets", path)
    assert again.status_code == 200 and again.json()["id"] == first["id"], again.text
    other = alice.upload("datasets", path, label_column="target")
    assert other.status_code == 201 and other.json()["id"] != first["id"], other.text
    assert alice.upload("datasets", path, label_column="target").json()["id"] == other.json()["id"]


def test_another_tenant_uploading_the_same_bytes_gets_its_own_object(alice, bob, tmp_path):
    path = _csv(tmp_path / "shared.csv", seed=1)
    mine = alice.ready_upload("datasets", path)
    theirs = bob.upload("datasets", path)
    assert theirs.status_code == 201 and theirs.json()["id"] != mine["id"], theirs.text
    assert mine["id"] not in [d["id"] for d in bob.http.get("/v1/datasets").json()["data"]]


def test_a_deleted_upload_is_not_reused(alice, tmp_path):
    path = _csv(tmp_path / "deleted.csv", seed=2)
    first = alice.ready_upload("datasets", path)
    assert alice.http.delete(f"/v1/datasets/{first['id']}").status_code == 204
    again = alice.upload("datasets", path)
    assert again.status_code == 201 and again.json()["id"] != first["id"], again.text


def test_a_failed_upload_does_not_block_a_new_one(alice, tmp_path):
    path = _csv(tmp_path / "bad.csv", seed=3, species=True)
    first = alice.upload("datasets", path)
    assert first.status_code == 201, first.text
    assert alice.wait_upload("datasets", first.json()["id"])["status"] == "invalid"
    again = alice.upload("datasets", path)
    assert again.status_code == 201 and again.json()["id"] != first.json()["id"], again.text


def test_the_openapi_documents_the_200_of_a_reused_upload(svc, alice):
    paths = alice.http.get("/openapi.json").json()["paths"]
    for route in ("/v1/models", "/v1/datasets"):
        responses = paths[route]["post"]["responses"]
        assert "201" in responses and "same bytes" in responses["200"]["description"], responses.keys()


def test_an_upload_still_validating_is_reused(tmp_path_factory, tmp_path):
    """With no uploads worker, an upload stays `validating`: the same bytes again answer 200 with it."""
    with running_service(tmp_path_factory.mktemp("no-uploads-worker"), queues="jobs") as service:
        client = Client(service.url, service.new_key("carol"))
        path = save_script(Linear(), tmp_path / "teacher.pt")
        first = client.upload("models", path)
        assert first.status_code == 201 and first.json()["status"] == "validating", first.text
        again = client.upload("models", path)
        assert again.status_code == 200 and again.json()["id"] == first.json()["id"], again.text
