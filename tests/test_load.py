"""Load: 200 jobs submitted at once to two workers all finish; none is lost and none runs twice."""

from __future__ import annotations

import pytest

from tests.support.load import run_load, tiny_inputs
from tests.support.service import running_service

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_200_concurrent_jobs_on_two_workers_all_finish_exactly_once(tmp_path, postgres_url, redis_url):
    env = {"DISTILLERY_MAX_ACTIVE_JOBS_PER_TENANT": "1000", "OMP_NUM_THREADS": "1"}
    with running_service(tmp_path, database_url=postgres_url, broker_url=redis_url, workers=2, extra_env=env) as svc:
        result = run_load(svc, tiny_inputs(tmp_path / "inputs"), jobs=200)
    assert len(set(result["ids"])) == 200
    assert result["statuses"] == ["succeeded"] * 200
    assert result["claims"] == [1] * 200, "every job is claimed exactly once"
    assert result["attempts"] == [1] * 200
    print(
        f"\n200 jobs, 2 workers: {result['jobs_per_minute']:.1f} jobs/min; submit->finish median "
        f"{result['turnaround_median_s']:.1f} s, p95 {result['turnaround_p95_s']:.1f} s"
    )
