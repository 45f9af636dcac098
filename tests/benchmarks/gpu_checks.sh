#!/usr/bin/env bash
# Every GPU check in one run on the device machine (an H200 with its own python3, torch and torchvision).
# Prepare here once (the device tool's README: carried wheels), from the repository root:
#   grep -qx '/.whl/' .git/info/exclude || echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl torchdistill==1.1.5 pydantic==2.14.4 pydantic_core==2.50.5 \
#       pydantic-settings==2.16.3 python-dotenv==1.2.4 typing-inspection==0.4.5 annotated-types==0.8.0
# (pydantic: the job child's supervisor reads the sandbox settings; the machine's Python lacks it.)
# then call the device tool's run with command "bash tests/benchmarks/gpu_checks.sh", carry [".whl"],
# timeout_s 560, and give the machine back. Results land in $OUT: gpu.txt, job_child.txt, engine_tests.txt,
# bench_engine.txt, ddp.txt.
set -uo pipefail
out=${OUT:-/tmp/gpu-checks}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
    python3 -c "import torchdistill; print('torchdistill', torchdistill.__version__)"
} 2>&1 | tee "$out/gpu.txt"
# A whole job through the job child (worker/supervisor.py + worker/job_child.py) on the GPU, as the service runs it.
timeout ${JOB_T:-150} python3 tests/benchmarks/gpu_job_child.py --device cuda 2>&1 | tee "$out/job_child.txt"
# --confcutdir: tests/conftest.py imports the servers' client libraries (psycopg, redis), absent there;
# the engine tests need only tests/engine/conftest.py. The engine picks CUDA by default, so test_distill
# runs on the GPU too.
timeout ${TEST_T:-150} python3 -m pytest -q -p no:cacheprovider --confcutdir=tests/engine -rs \
    tests/engine/test_cuda.py tests/engine/test_distill.py 2>&1 | tee "$out/engine_tests.txt"
timeout ${BENCH_T:-230} python3 tests/benchmarks/bench_engine.py ${BENCH_ARGS:-} 2>&1 | tee "$out/bench_engine.txt"
# Several ranks for one job (`gpus: 2`, worker/job_ranks.py): NCCL, one CUDA device per rank, needs 2 devices.
gpus=$(python3 -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
if [ "${gpus:-0}" -ge 2 ]; then
    timeout ${DDP_T:-200} python3 tests/benchmarks/bench_ddp.py --device cuda --gpus 2 --rows 200000 \
        --hidden 1024 1024 --batch-size 1024 --epochs 3 2>&1 | tee "$out/ddp.txt"
else
    echo "skipped: the NCCL ranks check needs 2 CUDA devices, this machine has ${gpus:-0}" | tee "$out/ddp.txt"
fi
