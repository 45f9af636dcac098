"""Without a working bubblewrap: one tenant runs everything (with a warning); a second tenant turns code-bearing
formats off unless DISTILLERY_ALLOW_UNSANDBOXED=1; ONNX and datasets keep working. Plus the student-size cap."""

from __future__ import annotations

import pytest
import torch

from app.models import Model, Tenant, new_id
from tests.support.hostile import Linear, save_script
from tests.support.rows import in_process_database, upload_row


@pytest.fixture
def db(tmp_path, monkeypatch):
    with in_process_database(tmp_path, monkeypatch) as sessionmaker:
        yield sessionmaker


def _tenants(sessionmaker, n: int) -> list[str]:
    ids = []
    with sessionmaker() as session:
        for i in range(n):
            tenant = Tenant(id=new_id("ten"), name=f"tenant-{i}")
            session.add(tenant)
            ids.append(tenant.id)
        session.commit()
    return ids


def _validate_torchscript(sessionmaker, tmp_path, tenant_id: str) -> dict:
    from app.settings import get_settings
    from app.storage import LocalStorage
    from worker.validate import inspect_upload

    storage = LocalStorage.from_settings(get_settings())
    stored = storage.path(f"{tenant_id}/models/m/model.pt")
    stored.parent.mkdir(parents=True)
    save_script(Linear(), stored)
    row = upload_row(Model, tenant_id, format="torchscript", path=storage.relative(stored))
    return inspect_upload("models", row, storage, get_settings())


def test_one_tenant_without_bubblewrap_still_runs_code_bearing_models(db, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("DISTILLERY_SANDBOX", "unshare")
    (tenant,) = _tenants(db, 1)
    result = _validate_torchscript(db, tmp_path, tenant)
    assert result.get("info", {}).get("format") == "torchscript", result
    assert "NO SANDBOX" in caplog.text


def test_a_second_tenant_without_bubblewrap_turns_code_bearing_models_off(db, tmp_path, monkeypatch):
    from app.settings import get_settings

    monkeypatch.setenv("DISTILLERY_SANDBOX", "unshare")
    first, _second = _tenants(db, 2)
    result = _validate_torchscript(db, tmp_path, first)
    assert result["error"]["code"] == "sandbox_unavailable", result
    assert "bubblewrap" in result["error"]["message"] and "ONNX" in result["error"]["message"]
    monkeypatch.setenv("DISTILLERY_ALLOW_UNSANDBOXED", "1")
    get_settings.cache_clear()
    (tmp_path / "storage").rename(tmp_path / "storage-before")
    assert _validate_torchscript(db, tmp_path, first).get("info", {}).get("format") == "torchscript"


def test_with_bubblewrap_a_second_tenant_changes_nothing(db, tmp_path, monkeypatch):
    from worker.sandbox import best_mechanism

    if best_mechanism() != "bwrap":
        pytest.skip("needs bubblewrap (installed by .ci/run)")
    monkeypatch.setenv("DISTILLERY_SANDBOX", "bwrap")
    first, _second = _tenants(db, 2)
    assert _validate_torchscript(db, tmp_path, first).get("info", {}).get("format") == "torchscript"


def test_a_built_in_student_over_the_parameter_cap_fails_with_the_setting_named(tmp_path):
    import numpy as np

    from worker.engine import DatasetSpec, DistillConfig, EngineError, distill

    np.savez(
        tmp_path / "d.npz", x=np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32), y=np.arange(40) % 3
    )
    teacher = save_script(Linear(), tmp_path / "t.pt")
    config = DistillConfig.from_dict({"epochs": 1, "student": {"architecture": "mlp", "hidden_sizes": [64]}})
    with pytest.raises(EngineError) as err:
        distill(
            str(teacher),
            DatasetSpec(path=str(tmp_path / "d.npz"), format="npz"),
            None,
            config,
            str(tmp_path / "out"),
            max_student_parameters=100,
        )
    assert err.value.code == "limit_exceeded" and "DISTILLERY_MAX_STUDENT_PARAMETERS" in err.value.message
    assert torch.__version__  # torch is this test's only heavy import: the engine ran in this process


def test_an_uploaded_student_over_the_parameter_cap_is_a_422(db, monkeypatch):
    from app.errors import Unprocessable
    from app.job_inputs import check_student_size as _check_student_size
    from app.settings import get_settings

    monkeypatch.setenv("DISTILLERY_MAX_STUDENT_PARAMETERS", "1000")
    get_settings.cache_clear()
    big = upload_row(Model, "t", status="ready", info={"num_parameters": 5000})
    with pytest.raises(Unprocessable) as err:
        _check_student_size(big)
    assert "DISTILLERY_MAX_STUDENT_PARAMETERS" in str(err.value.message) and err.value.code == "limit_exceeded"
    _check_student_size(upload_row(Model, "t", status="ready", info={"num_parameters": 999}))
