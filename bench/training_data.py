"""Reading a large training channel: time and peak memory for a 1 GB CSV, sagecraft against pandas.

    python3 bench/training_data.py            # writes a 1 GB CSV under .bench/ (kept for reruns)
    python3 bench/training_data.py --mib 200

Each reader runs in a fresh process (its peak RSS, from getrusage, is what it alone needed):
sagecraft's channel reader (pyarrow's CSV reader block by block, features narrowed to float32) and
`pandas.read_csv` with its defaults (float64), the reader AWS's images use. The table goes to
bench/TRAINING_DATA.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

HERE = Path(__file__).resolve().parent
WORK = HERE.parent / ".bench" / "training-data"
FEATURES = 20

READERS = {
    "sagecraft read_channel": (
        "from pathlib import Path; from sagecraft.training.data import read_channel; "
        "t = read_channel(Path({folder!r}), channel='train', target=None); print(len(t.features))"
    ),
    "pandas.read_csv (AWS's images)": (
        "import pandas as pd; from pathlib import Path; "
        "f = [pd.read_csv(p, header=None) for p in sorted(Path({folder!r}).glob('*.csv'))]; "
        "print(sum(len(x) for x in f))"
    ),
}


def write_channel(folder: Path, mib: int) -> Path:
    """Label-first, header-less CSV of about `mib` MiB (SageMaker's built-in convention)."""
    path = folder / "train.csv"
    if path.exists() and abs(path.stat().st_size - mib * 2**20) < 0.05 * mib * 2**20:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with pacsv.CSVWriter(
        path,
        pa.schema([(f"c{i}", pa.float64()) for i in range(FEATURES + 1)]),
        write_options=pacsv.WriteOptions(include_header=False),
    ) as writer:
        while path.stat().st_size < mib * 2**20:
            block = np.round(rng.normal(size=(200_000, FEATURES + 1)), 5)
            block[:, 0] = block[:, 1] > 0
            writer.write_table(pa.table({f"c{i}": block[:, i] for i in range(FEATURES + 1)}))
    return path


def measure(code: str) -> tuple[float, int, str]:
    """Seconds, the child's own peak RSS in bytes, and what it printed."""
    report = "; import resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code + report], capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    count, peak_kib = out.stdout.split()[-2:]
    return seconds, int(peak_kib) * 1024, count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--output", type=Path, default=HERE / "TRAINING_DATA.md")
    args = parser.parse_args()
    folder = WORK / f"{args.mib}mib"
    path = write_channel(folder, args.mib)
    size = path.stat().st_size
    rows = []
    for name, template in READERS.items():
        seconds, peak, count = measure(template.format(folder=str(folder)))
        rows.append(
            f"| {name} | {int(count):,} | {seconds:.1f} | {size / 2**20 / seconds:.0f} | "
            f"{peak / 2**20:,.0f} | {peak / size:.2f}x |"
        )
        print(rows[-1], flush=True)
    text = "\n".join(
        [
            "# Reading a large training channel",
            "",
            f"`python3 bench/training_data.py --mib {args.mib}` on {platform.node()}: "
            f"{len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}, "
            f"{time.strftime('%Y-%m-%d')}. One header-less CSV file of {size / 2**20:,.0f} MiB, label "
            f"first, {FEATURES} features; each reader in a fresh process; peak = the process's peak RSS.",
            "",
            "| reader | rows | seconds | MiB/s | peak RSS MiB | peak / file size |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
