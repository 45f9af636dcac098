"""Schemathesis against a live embedded service's OpenAPI schema, with two tenants' keys.

Checks: no 5xx (not_a_server_error) and every response matches the schema (response_schema_conformance).
Each tenant owns a ready model and dataset, so generated ids and bodies reach real rows as well as misses.
"""

from __future__ import annotations

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.support.service import Client, running_service

MAX_EXAMPLES = 20


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("schemathesis")
    with running_service(tmp, extra_env={"DISTILLERY_MAX_UPLOAD_BYTES": str(1024**2)}) as svc:
        keys = {}
        for tenant in ("alice", "bob"):
            keys[tenant] = svc.new_key(tenant)
            client = Client(svc.url, keys[tenant])
            data = tmp / f"{tenant}.npz"
            rng = np.random.default_rng(0)
            np.savez(data, x=rng.normal(size=(30, 4)).astype(np.float32), y=rng.integers(0, 3, 30))
            client.ready_upload("datasets", data)
        yield svc, keys


def test_api_conforms(live):
    """Every operation, MAX_EXAMPLES generated cases, each sent with both tenants' keys."""
    svc, keys = live
    schema = schemathesis.openapi.from_url(f"{svc.url}/openapi.json")
    failures, operations = [], 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def check(case):
            for tenant in ("alice", "bob"):
                case.call_and_validate(
                    base_url=svc.url,
                    headers={"Authorization": f"Bearer {keys[tenant]}"},
                    checks=[not_a_server_error, response_schema_conformance],
                )

        try:
            check()
        except Exception as exc:  # collect every operation's failure, not just the first
            failures.append(f"{operation.label}: {str(exc)[:1500]}")
    assert operations >= 10
    assert not failures, "\n\n".join(failures)
