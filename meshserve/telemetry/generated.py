"""The command line of the files built from the metric catalogue (the Grafana dashboard JSON,
the Prometheus rules YAML): write the file, or with ``--check`` fail when it is stale."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["write_or_check"]


def write_or_check(
    out: Path, text: str, argv: list[str] | None, description: str, builder: str
) -> int:
    """Write `text` to `out` (exit code 0), or with ``--check`` in `argv` compare only: 1 and a
    message naming `builder` (the script to run) when the file differs."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--check", action="store_true", help="fail when the file is stale")
    args = parser.parse_args(argv)
    if args.check:
        if not out.exists() or out.read_text() != text:
            print(f"{out} is stale: run {builder}", file=sys.stderr)
            return 1
        return 0
    out.write_text(text)
    return 0
