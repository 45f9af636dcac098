"""Benchmark: 200 jobs submitted at once to workers on PostgreSQL + Redis; prints throughput and latency.

With `--store s3` the same load runs twice in one invocation, first with the files on the local disk, then in
an object store (moto's S3 server: uploads, artifacts and checkpoints in the bucket, each worker fetching its
inputs into its own cache), and the two runs' queue latency and throughput are printed side by side. Either
way it checks that no job is lost and none runs twice.

Run: .venv/bin/python -m tests.benchmarks.bench_load [--jobs N] [--workers N] [--store local|s3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg

from tests.conftest import PG_ADMIN, REDIS_URL
from tests.support.load import run_load, tiny_inputs
from tests.support.s3_server import s3_server
from tests.support.service import running_service

# Its own Redis index (DISTILLERY_TEST_REDIS_DB, as for the tests), so a run beside others takes no one's messages.
REDIS_DB = os.environ.get("DISTILLERY_TEST_REDIS_DB", "12")


@contextlib.contextmanager
def _database() -> Iterator[str]:
    name = f"distillery_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + "/" + name
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_once(store: str, jobs: int, workers: int) -> dict:
    """The load on a fresh database, with files on the local disk or in a fresh object store."""
    with tempfile.TemporaryDirectory() as tmp, _database() as database, contextlib.ExitStack() as stack:
        env = {"DISTILLERY_MAX_ACTIVE_JOBS_PER_TENANT": "100000", "OMP_NUM_THREADS": "1"}
        if store == "s3":
            s3 = stack.enter_context(s3_server(Path(tmp) / "s3"))
            env |= {k: v for k, v in s3.items() if k != "bucket"}
            env["DISTILLERY_STORAGE_URL"] = f"s3://{s3['bucket']}/bench"
        svc = stack.enter_context(
            running_service(
                Path(tmp), database_url=database, broker_url=f"{REDIS_URL}/{REDIS_DB}", workers=workers, extra_env=env
            )
        )
        result = run_load(svc, tiny_inputs(Path(tmp) / "inputs"), jobs=jobs)
    result["exactly_once"] = (
        result["statuses"] == ["succeeded"] * jobs
        and result["claims"] == [1] * jobs
        and len(set(result["ids"])) == jobs
    )
    return result


def _line(store: str, result: dict, jobs: int) -> str:
    return (
        f"{store:<12} succeeded {result['statuses'].count('succeeded')}/{jobs}, claims per job "
        f"{sorted(set(result['claims']))}, attempts {sorted(set(result['attempts']))}, exactly once "
        f"{'yes' if result['exactly_once'] else 'NO'}; wall {result['elapsed_s']:.1f} s, "
        f"{result['jobs_per_minute']:.1f} jobs/min; queue latency median {result['queue_median_s']:.1f} s, "
        f"p95 {result['queue_p95_s']:.1f} s; submit -> finish median {result['turnaround_median_s']:.1f} s, "
        f"p95 {result['turnaround_p95_s']:.1f} s"
    )


def main() -> None:
    """Run the load (twice with --store s3: local disk, then the object store) and print the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--store", choices=("local", "s3"), default="local", help="s3: also the local-disk run")
    args = parser.parse_args()
    stores = ["local disk", "object store"] if args.store == "s3" else ["local disk"]
    results = {
        store: run_once("s3" if store == "object store" else "local", args.jobs, args.workers) for store in stores
    }
    print(f"command: {' '.join([Path(sys.executable).name, '-m', 'tests.benchmarks.bench_load', *sys.argv[1:]])}")
    print(
        f"jobs {args.jobs}, workers {args.workers} (solo pool, OMP_NUM_THREADS=1), PostgreSQL + Redis, "
        "1-epoch jobs on 256 rows"
    )
    for store, result in results.items():
        print(_line(store, result, args.jobs))
    if not all(r["exactly_once"] for r in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
