#!/usr/bin/env bash
# mypy over the `meshserve` package as installed (package-dir mapping rebuilt as a symlink tree,
# because mypy cannot follow setuptools' editable import hooks).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TREE="$ROOT/.cache/typecheck/meshserve"
rm -rf "$ROOT/.cache/typecheck" && mkdir -p "$TREE"
for entry in "$ROOT"/clients/*; do ln -s "$entry" "$TREE/$(basename "$entry")"; done
for pkg in registry modelsvc orchestrator; do ln -s "$ROOT/$pkg" "$TREE/$pkg"; done
cd "$ROOT/.cache/typecheck"
exec "$ROOT/.venv/bin/mypy" --config-file "$ROOT/pyproject.toml" -p meshserve "$@"
