"""``make bench``: every benchmark in turn, each measuring its own baselines in its run.

``python -m bench.run_all [--only modelsvc,orchestrator,tracing,typed,http,cost]``; results land in
bench/results/ (one JSON file per benchmark run) and each table is printed as it finishes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from bench import (
    bench_cost,
    bench_feedback,
    bench_http,
    bench_modelsvc,
    bench_orchestrator,
    bench_tracing,
    bench_typed,
)

BENCHMARKS: dict[str, Callable[[list[str] | None], int]] = {
    "modelsvc": bench_modelsvc.main,
    "orchestrator": bench_orchestrator.main,
    "tracing": bench_tracing.main,
    "typed": bench_typed.main,
    "http": bench_http.main,
    "cost": bench_cost.main,
    "feedback": bench_feedback.main,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated names")
    names = [n for n in parser.parse_args(argv).only.split(",") if n]
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmarks {unknown} (expected some of {sorted(BENCHMARKS)})")
    failed = [name for name in names if BENCHMARKS[name]([]) != 0]
    if failed:
        print(f"benchmarks that failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
