# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Needs only python3 (3.11), Java 17+ and Maven (and Node.js with npm for `make test`); uv, Python
# packages, Kafka jars and the AsyncAPI parser install here.

SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
KAFKA_JARS := infra/kafka/lib/.complete
ASYNCAPI_PARSER := infra/asyncapi/node_modules/.complete
PYTEST_ARGS ?=

.PHONY: setup browser asyncapi-parser jaeger demo demo-backbone test lint typecheck schemas bench-backbone bench-loop bench-incremental bench-drift bench-gate bench-serving up clean

setup: .venv/.synced $(KAFKA_JARS)

.venv/.synced: pyproject.toml uv.lock schemas/pyproject.toml libs/*/pyproject.toml
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet --user uv
	$(UV) sync --frozen --python 3.11
	@touch $@

$(KAFKA_JARS): infra/kafka/pom.xml
	mvn -q -B -f infra/kafka/pom.xml dependency:copy-dependencies
	@touch $@

demo: setup
	$(UV) run --frozen adaptmesh demo

demo-backbone: setup
	$(UV) run --frozen adaptmesh demo-backbone

# Headless Chromium for the test of the gate's HTML report (Debian packages; apt needs root).
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver \
		|| { $$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y chromium chromium-driver; }; \
	fi

# Jaeger v2 for traces without Docker (`adaptmesh up --jaeger`, `make demo`, the traces e2e test):
# built once with Go from its module into ~/.cache/adaptmesh (MESH_EMBEDDED_CACHE_DIR), about 4
# minutes on two cores. `make test` builds it when Go is there; without Go that test is skipped.
jaeger: .venv/.synced
	$(UV) run --frozen python -m adaptmesh_embedded.jaeger

# The official AsyncAPI parser (npm, version pinned by package-lock.json) for the test that
# schemas/asyncapi.json parses as a new user's tools would parse it. No install scripts run.
asyncapi-parser: $(ASYNCAPI_PARSER)

$(ASYNCAPI_PARSER): infra/asyncapi/package.json infra/asyncapi/package-lock.json
	npm ci --prefix infra/asyncapi --ignore-scripts --no-audit --no-fund
	@touch $@

test: setup browser asyncapi-parser lint typecheck
	@if command -v go >/dev/null 2>&1; then $(MAKE) --no-print-directory jaeger; \
	else echo "no Go on PATH: the Jaeger traces test will be skipped"; fi
	$(UV) run --frozen pytest $(PYTEST_ARGS)

lint:
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

typecheck:
	$(UV) run --frozen mypy

schemas: .venv/.synced
	$(UV) run --frozen python -m adaptmesh_schemas.generate

bench-backbone: setup
	$(UV) run --frozen python -m bench.backbone

clean:
	rm -rf .venv infra/kafka/lib infra/asyncapi/node_modules .mesh .pytest_cache .mypy_cache .ruff_cache

bench-loop: setup
	$(UV) run --frozen python -m bench.loop

bench-incremental: setup
	$(UV) run --frozen python -m bench.incremental

bench-drift: setup
	$(UV) run --frozen python -m bench.drift

bench-gate: setup
	$(UV) run --frozen python -m bench.gate

bench-serving: setup
	$(UV) run --frozen python -m bench.serving

up: setup
	$(UV) run --frozen adaptmesh up
