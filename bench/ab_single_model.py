"""A/B of two sagecraft installs' single-model endpoints, side by side in one run.

    python3 bench/ab_single_model.py --baseline /path/to/venv/bin/sagecraft

To check that a change leaves the single-model endpoint's speed alone: this checkout's `sagecraft`
and another install's (e.g. a virtual environment with an earlier commit, `pip install --no-deps
<worktree>`) serve the same XGBoost model with the same workers; wrk alternates between them run by
run (single-row and 100-row CSV, 16 connections) and the table quotes medians and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import serving  # bench/serving.py (this script's folder is on sys.path)
from serving import Result, fix_port, sagecraft_server, wrk


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, help="the other install's `sagecraft`")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    serving.ensure_tools()
    model = serving.ensure_model("xgboost")
    bodies = serving.write_bodies(serving.training_data()[1])
    workers = {"SAGEMAKER_MODEL_SERVER_WORKERS": str(args.workers)}
    this = fix_port(sagecraft_server("this checkout", model, **workers)).start()
    baseline = sagecraft_server("baseline", model, **workers)
    baseline.command = [str(args.baseline), "serve"]
    baseline = fix_port(baseline).start()
    results: dict[tuple[str, int], list[Result]] = {}
    try:
        for round_index in range(args.rounds):
            for rows in (1, 100):
                order = [this, baseline] if round_index % 2 == 0 else [baseline, this]
                for server in order:
                    body = bodies[("csv", rows)]
                    result = wrk(server.url, body, "text/csv", args.duration, args.connections)
                    results.setdefault((server.name, rows), []).append(result)
                    print(f"{server.name}, {rows} rows: {result.rps:.0f} req/s", flush=True)
    finally:
        this.stop()
        baseline.stop()
    print(f"\n| rows | this checkout req/s | baseline req/s | this / baseline |  ({args.workers} workers)")
    print("|---|---|---|---|")
    for rows in (1, 100):
        ours = statistics.median(r.rps for r in results[("this checkout", rows)])
        theirs = statistics.median(r.rps for r in results[("baseline", rows)])
        print(f"| {rows} | {ours:.0f} | {theirs:.0f} | {ours / theirs:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
