#!/usr/bin/env bash
# mypy over the `meshserve` package as installed: meshserve/ plus its subpackage folders
# (clients/, registry/, modelsvc/, orchestrator/, contracts/) linked into one tree, because mypy cannot
# follow setuptools' editable import hooks.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TREE="$ROOT/.cache/typecheck/meshserve"
rm -rf "$ROOT/.cache/typecheck" && mkdir -p "$TREE"
for entry in "$ROOT"/meshserve/*; do ln -s "$entry" "$TREE/$(basename "$entry")"; done
for pkg in clients registry modelsvc orchestrator contracts; do ln -s "$ROOT/$pkg" "$TREE/$pkg"; done
cd "$ROOT/.cache/typecheck"
exec "$ROOT/.venv/bin/mypy" --config-file "$ROOT/pyproject.toml" -p meshserve "$@"
