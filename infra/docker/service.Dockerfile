# One image recipe for every adaptmesh service:
#   docker build -f infra/docker/service.Dockerfile --build-arg SERVICE=adaptmesh-training .
# SERVICE is the service's distribution name (see services/*/pyproject.toml); the container
# runs its console script. The lock file pins every dependency.
FROM python:3.11-slim

ARG SERVICE
ENV SERVICE=${SERVICE} \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    RAY_USAGE_STATS_ENABLED=0

RUN pip install --no-cache-dir uv
WORKDIR /app
COPY . /app
RUN uv sync --frozen --no-dev --package "${SERVICE}"

ENV PATH="/app/.venv/bin:${PATH}"
CMD ["sh", "-c", "exec \"$SERVICE\""]
