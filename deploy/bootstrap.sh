#!/usr/bin/env bash
# Set up a development/CI environment from a fresh clone, idempotently:
#   .venv with meshserve[dev] installed editable, the Consul binary, the example models.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"

if [[ ! -x .venv/bin/python ]]; then
  "$PYTHON" -m venv .venv
fi
STAMP=.venv/.meshserve-installed
if [[ ! -f "$STAMP" || pyproject.toml -nt "$STAMP" ]]; then
  .venv/bin/python -m pip install --quiet --upgrade pip setuptools wheel
  .venv/bin/python -m pip install --quiet -e ".[dev]"
  touch "$STAMP"
fi
CONSUL_BIN="$(deploy/install_consul.sh)"
echo "consul: $CONSUL_BIN" >&2
# Debian packages some tests use, installed best-effort (root + apt only): each test that needs
# one skips with its reason when the command is still missing.
apt_best_effort() {  # COMMAND PACKAGE WHAT-SKIPS
  command -v "$1" >/dev/null && return 0
  command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]] || return 0
  { DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$2" >&2 \
    || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive \
         apt-get install -y --no-install-recommends "$2" >&2; }; } \
    || echo "$1: apt-get install $2 failed; $3" >&2
}
# promtool validates every process's /metrics; prometheus runs the dashboard test.
apt_best_effort promtool prometheus "metrics tests will skip promtool and Prometheus"
# protoc's C++/Java generators: an exported typed .proto must compile for a non-Python language.
apt_best_effort protoc protobuf-compiler "typed-contract tests skip the protoc check"
# A headless browser renders the orchestrator's docs page.
apt_best_effort chromium chromium "the docs-page test will skip"
# The Redis-outage test runs (and kills) a Redis of its own.
apt_best_effort redis-server redis-server "the Redis outage test will skip"
if [[ -f examples/build_models.py ]]; then
  .venv/bin/python examples/build_models.py --out examples/models >&2
fi
