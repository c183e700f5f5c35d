"""The 10,000-row baseline of bench/serving.py: our CSV parser and the model's predict, without HTTP,
in as many processes as the server has workers, each with a worker's thread settings.

    python3 bench/in_process.py MODEL_DIR BODY.csv --processes 2 --seconds 4

Prints the rows per second of all the processes together: what the same cores do without HTTP.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path


def run_one(model_dir: Path, body: Path, seconds: float) -> None:
    """One process: load, say "ready", wait for "go" on stdin, parse+predict until the time is up;
    prints the rows it finished and the seconds it took."""
    from sagecraft.loaded_model import LoadedModel
    from sagecraft.serving.csv_bodies import decode_csv

    model = LoadedModel.load(model_dir)
    data = body.read_bytes()
    model.predict(decode_csv(data, model.feature_names))  # warm
    print("ready", flush=True)
    sys.stdin.readline()
    started, rows = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        rows += len(model.predict(decode_csv(data, model.feature_names)))
    print(rows, time.perf_counter() - started, flush=True)


def rows_per_second(model_dir: Path, body: Path, processes: int, seconds: float) -> float:
    """Rows/s of `processes` processes at once; each gets the OpenMP threads a server worker gets
    (CPU count / workers), as sagecraft.serving.lifecycle sets them."""
    threads = max(1, (os.cpu_count() or 1) // processes)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    children = [
        subprocess.Popen(
            [sys.executable, __file__, str(model_dir), str(body), "--one", "--seconds", str(seconds)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    try:
        for child in children:  # every model loaded before any starts
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError("an in-process baseline process failed to start")
        for child in children:
            child.stdin.write("go\n")
            child.stdin.flush()
        total = 0.0
        for child in children:
            rows, elapsed = child.stdout.readline().split()
            total += int(rows) / float(elapsed)
        return total
    finally:
        for child in children:
            child.kill()
            child.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("body", type=Path)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_one(args.model_dir, args.body, args.seconds)
    else:
        print(f"{rows_per_second(args.model_dir, args.body, args.processes, args.seconds):.0f} rows/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
