# One image for every Distillery process: `distillery api`, `distillery worker`, `distillery migrate`.
#
# torch is installed first, from the PyTorch wheel index chosen by TORCH_VARIANT, so that `pip install .`
# finds it already satisfied and does not pull PyPI's default (CUDA) wheel:
#   docker build -t distillery .                                # CPU build (default, small)
#   docker build -t distillery --build-arg TORCH_VARIANT=cu128 .  # CUDA 12.8 build for GPU workers
# Any variant listed at https://download.pytorch.org/whl/ works (cpu, cu126, cu128, ...).
# docker-compose.yml builds the CUDA variant for its GPU workers (TORCH_VARIANT there).

FROM python:3.12-slim

ARG TORCH_VARIANT=cpu
ARG TORCH_SPEC="torch>=2.4"
# The service's packages (FastAPI, SQLAlchemy, Celery, torch...): the base install is only the client and the CLI.
ARG EXTRAS=server

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DISTILLERY_DATA_DIR=/data

# bubblewrap: the sandbox every upload is opened in (worker/sandbox.py). It needs the container to allow user
# namespaces (docker-compose.yml gives the worker seccomp/apparmor unconfined for that).
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap \
    && rm -rf /var/lib/apt/lists/*

RUN pip install --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" "${TORCH_SPEC}"

WORKDIR /srv/distillery
# README.md* : optional, the glob lets the build go on without it.
COPY pyproject.toml README.md* ./
COPY app ./app
COPY contract ./contract
COPY worker ./worker
COPY distillery_client ./distillery_client
COPY distillery_cli ./distillery_cli
COPY htmlreport ./htmlreport
COPY migrations ./migrations
# Editable: app/migrate.py finds migrations/ beside the app package, which a site-packages install lacks.
RUN pip install -e ".[${EXTRAS}]" \
    && useradd --system --create-home --uid 10001 distillery \
    && mkdir -p /data/storage \
    && chown -R distillery:distillery /data

USER distillery
VOLUME ["/data"]
EXPOSE 8000

CMD ["distillery", "api", "--host", "0.0.0.0"]
