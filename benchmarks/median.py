"""Medians over several ``latency.py --json`` result files (e.g. runs interleaved with other
configurations, so that changing background load hits every configuration alike).

Run: ``.venv/bin/python benchmarks/median.py base-1.json base-2.json base-3.json``

Prints one line per run (throughput, read/write p50 and p99, load average, errors) and the
median of each number over all the runs found in the files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from latency import median_of


def line(label: str, r: dict[str, Any]) -> str:
    def ms(op: str, q: str) -> str:
        value = r[op][f"{q}_ms"]
        return "-" if value is None else f"{value:.2f}"

    return (
        f"{label:<28} {r['total_ops_per_s']:>8.0f} ops/s  read p50/p99 {ms('read', 'p50')}/"
        f"{ms('read', 'p99')} ms  write p50/p99 {ms('write', 'p50')}/{ms('write', 'p99')} ms"
    )


def main(paths: list[str]) -> int:
    runs = []
    for path in paths:
        document = json.loads(Path(path).read_text())
        for i, run in enumerate(document["runs"]):
            runs.append(run)
            errors = run["errors"] or "no errors"
            print(f"{line(f'{Path(path).name}[{i}]', run)}  load {run['loadavg_before']}  {errors}")
    if not runs:
        print("no runs found")
        return 1
    summary = median_of(runs)
    print(f"\nmedian of {len(runs)} runs:")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
