"""Benchmark: 200 jobs submitted at once to two workers on PostgreSQL + Redis; prints throughput and latency.

Run: .venv/bin/python -m tests.benchmarks.bench_load [--jobs N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg

from tests.conftest import PG_ADMIN, REDIS_URL
from tests.support.load import run_load, tiny_inputs
from tests.support.service import running_service


def main() -> None:
    """Run the load once and print the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    name = f"distillery_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    database = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + "/" + name
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            running_service(
                Path(tmp),
                database_url=database,
                broker_url=f"{REDIS_URL}/12",
                workers=2,
                extra_env={"DISTILLERY_MAX_ACTIVE_JOBS_PER_TENANT": "100000", "OMP_NUM_THREADS": "1"},
            ) as svc,
        ):
            result = run_load(svc, tiny_inputs(Path(tmp) / "inputs"), jobs=args.jobs)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(f"command: {' '.join([Path(sys.executable).name, '-m', 'tests.benchmarks.bench_load', *sys.argv[1:]])}")
    print(f"jobs {args.jobs}, workers 2 (solo pool), PostgreSQL + Redis, 1-epoch jobs on 256 rows")
    print(
        f"succeeded {result['statuses'].count('succeeded')}/{args.jobs}; claims per job "
        f"{sorted(set(result['claims']))}; attempts {sorted(set(result['attempts']))}"
    )
    print(f"wall {result['elapsed_s']:.1f} s; {result['jobs_per_minute']:.1f} jobs/min")
    print(f"submit -> finish: median {result['turnaround_median_s']:.1f} s, p95 {result['turnaround_p95_s']:.1f} s")


if __name__ == "__main__":
    main()
