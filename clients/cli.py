"""The ``meshserve`` command line. Each command group lives in its own module and registers itself.

Groups: ``model`` (serve a model: meshserve.modelsvc.cli), ``orchestrator`` (serve the
orchestrator: meshserve.orchestrator.cli), ``up``/``down``/``status`` (local embedded mesh:
meshserve.clients.local), and the client commands ``plans``, ``models``, ``call``, ``stats``,
``trace`` (meshserve.clients.admin_cli). Flags and the environment are read here, at the
process edge, only.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

__all__ = ["main"]

# Modules that contribute command groups; each defines register(subparsers) and sets
# `handler` (a callable taking the parsed args and returning an exit code) on its parsers.
COMMAND_MODULES = (
    "meshserve.modelsvc.cli",
    "meshserve.orchestrator.cli",
    "meshserve.clients.local",
    "meshserve.clients.admin_cli",
    "meshserve.clients.trace_cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshserve", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--log-level", default=os.environ.get("MESHSERVE_LOG_LEVEL", "INFO"), help="logging level"
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # group not built yet
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = tuple(sys.argv[1:] if argv is None else argv)  # what supervisors re-run
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
