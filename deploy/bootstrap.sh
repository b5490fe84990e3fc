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
# promtool validates every process's /metrics in tests (skipped with a reason when missing).
if ! command -v promtool >/dev/null && command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]]; then
  { DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus >&2 \
    || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive \
         apt-get install -y --no-install-recommends prometheus >&2; }; } \
    || echo "promtool: apt-get install prometheus failed; metrics tests will skip promtool" >&2
fi
# A headless browser renders the orchestrator's docs page in tests (skipped with a reason
# when missing).
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]]; then
  { DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >&2 \
    || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive \
         apt-get install -y --no-install-recommends chromium >&2; }; } \
    || echo "chromium: apt-get install chromium failed; the docs-page test will skip" >&2
fi
# protoc with its built-in C++/Java generators: the typed-contract tests check that an exported
# .proto compiles for a non-Python language (skipped with a reason when missing).
if ! command -v protoc >/dev/null && command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]]; then
  { DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends protobuf-compiler >&2 \
    || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive \
         apt-get install -y --no-install-recommends protobuf-compiler >&2; }; } \
    || echo "protoc: apt-get install protobuf-compiler failed; typed-contract tests skip it" >&2
fi
if [[ -f examples/build_models.py ]]; then
  .venv/bin/python examples/build_models.py --out examples/models >&2
fi
