"""Training from a large CSV channel: time and peak memory, sagecraft against the plain script.

    python3 bench/training_data.py               # a 2 GiB CSV under .bench/ (kept for reruns)
    python3 bench/training_data.py --mib 300     # a quick look

Two tables, every run a fresh process whose peak resident memory comes from the kernel
(`wait4`'s ru_maxrss: that process alone):

- reading: `pandas.read_csv` (the reader AWS's images use), sagecraft's in-memory channel reader,
  and sagecraft's streamed reader (chunks parsed in parallel into float32 batches on disk);
- training XGBoost (`hist`, 10 rounds): the plain script a user would write (`pandas.read_csv`
  then `xgboost.train` on a `DMatrix`), and `sagecraft train` in memory, streamed
  (`QuantileDMatrix` from the batches), streamed with external memory, from a Pipe mode FIFO fed
  by a writer process, and with external memory in a memory cgroup of a third of the file's size
  (where the machine lets us make one: cgroup v1 or v2, writable), which the plain script and the
  in-memory job cannot survive.

Ratios are against the plain script / pandas in the same run. The tables go to
bench/TRAINING_DATA.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

HERE = Path(__file__).resolve().parent
WORK = HERE.parent / ".bench" / "training-data"
FEATURES = 128
ROUNDS = 10
CGROUP_V1 = Path("/sys/fs/cgroup/memory")
CGROUP_V2 = Path("/sys/fs/cgroup")

READERS = {
    "pandas.read_csv (AWS's images)": (
        "import pandas as pd; f = pd.read_csv({path!r}, header=None); print(len(f))"
    ),
    "sagecraft, in memory (read_channel)": (
        "from pathlib import Path; from sagecraft.training.data import read_channel; "
        "t = read_channel(Path({folder!r}), channel='train', target=None, feature_dtype='float32'); "
        "print(len(t.features))"
    ),
    "sagecraft, streamed (read_stream)": (
        "from pathlib import Path; from sagecraft.training.stream import Source, read_stream; "
        "s = read_stream(Source([Path({path!r})]), Path({scratch!r}), channel='train', fmt=None, "
        "header=False, target=None, csv_weights=False, encoding='utf-8', memory_limit=1 << 40); "
        "print(s.rows); s.remove()"
    ),
}
PLAIN_SCRIPT = (
    "import pandas as pd, xgboost as xgb; f = pd.read_csv({path!r}, header=None); "
    "d = xgb.DMatrix(f.iloc[:, 1:], label=f[0]); del f; "
    "b = xgb.train({{'objective': 'binary:logistic', 'tree_method': 'hist'}}, d, {rounds}); "
    "print(d.num_row())"
)


def write_channel(folder: Path, mib: int) -> Path:
    """Label-first, header-less CSV of about `mib` MiB (SageMaker's built-in convention)."""
    path = folder / "train.csv"
    if path.exists() and abs(path.stat().st_size - mib * 2**20) < 0.05 * mib * 2**20:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with pacsv.CSVWriter(
        path,
        pa.schema([(f"c{i}", pa.float32()) for i in range(FEATURES + 1)]),
        write_options=pacsv.WriteOptions(include_header=False),
    ) as writer:
        while path.stat().st_size < mib * 2**20:
            block = np.round(rng.normal(size=(50_000, FEATURES + 1)), 4).astype(np.float32)
            block[:, 0] = (block[:, 1] + block[:, 2] > 0).astype(np.float32)
            writer.write_table(pa.table({f"c{i}": block[:, i] for i in range(FEATURES + 1)}))
    return path


@contextlib.contextmanager
def memory_cgroup(limit: int) -> Iterator[Path | None]:
    """A memory cgroup of `limit` bytes to start a process in (its `cgroup.procs`), or None."""
    name = f"sagecraft-bench-{os.getpid()}"
    for root, limit_file in ((CGROUP_V1, "memory.limit_in_bytes"), (CGROUP_V2, "memory.max")):
        group = root / name
        try:
            group.mkdir()
        except OSError:
            continue
        try:
            (group / limit_file).write_text(str(limit))
            with contextlib.suppress(OSError):
                (group / "memory.swap.max").write_text("0")
            yield group / "cgroup.procs"
        finally:
            with contextlib.suppress(OSError):
                group.rmdir()
        return
    yield None


def run(
    command: list[str], env: dict[str, str] | None = None, procs: Path | None = None
) -> tuple[float, int, int, str]:
    """Seconds, the process's peak RSS in bytes, its exit status and its output's tail."""
    if procs is not None:  # the shell joins the cgroup, then becomes the command
        command = ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh", *command]
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output: list[bytes] = []
    reader = threading.Thread(target=lambda: output.append(process.stdout.read()))  # type: ignore[union-attr]
    reader.start()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    reader.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    return (
        seconds,
        usage.ru_maxrss * 1024,
        process.returncode,
        b"".join(output).decode(errors="replace")[-400:],
    )


def job(base: Path, train: Path, hyperparameters: dict[str, object], pipe: bool = False) -> Path:
    """A SageMaker training tree whose train channel is `train` (linked), or a Pipe mode FIFO."""
    shutil.rmtree(base, ignore_errors=True)
    (base / "input" / "config").mkdir(parents=True)
    (base / "input" / "data" / "train").mkdir(parents=True)
    config = base / "input" / "config"
    (config / "hyperparameters.json").write_text(json.dumps({k: str(v) for k, v in hyperparameters.items()}))
    (config / "resourceconfig.json").write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}))
    mode = {"TrainingInputMode": "Pipe" if pipe else "File", "ContentType": "text/csv"}
    (config / "inputdataconfig.json").write_text(json.dumps({"train": mode}))
    if pipe:
        os.mkfifo(base / "input" / "data" / "train_0")
    else:
        os.link(train, base / "input" / "data" / "train" / train.name)
    return base


def feed(fifo: Path, source: Path) -> threading.Thread:
    """SageMaker's side of a Pipe mode channel: the file written into the FIFO."""

    def write() -> None:
        with source.open("rb") as data, fifo.open("wb") as out:
            shutil.copyfileobj(data, out, 1 << 20)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--mib", type=int, default=2048)
    parser.add_argument("--output", type=Path, default=HERE / "TRAINING_DATA.md")
    args = parser.parse_args()
    folder = WORK / f"{args.mib}mib"
    path = write_channel(folder, args.mib)
    size = path.stat().st_size
    python = sys.executable
    sagecraft = [shutil.which("sagecraft") or "sagecraft", "train"]

    reading = []
    base_seconds = base_peak = 0.0
    for name, template in READERS.items():
        code = template.format(path=str(path), folder=str(folder), scratch=str(WORK / "scratch"))
        seconds, peak, status, tail = run([python, "-c", code])
        assert status == 0, tail
        if not reading:
            base_seconds, base_peak = seconds, peak
        reading.append(
            f"| {name} | {seconds:.1f} | {size / 2**20 / seconds:.0f} | {base_seconds / seconds:.2f}x | "
            f"{peak / 2**20:,.0f} | {peak / base_peak:.2f}x |"
        )
        print(reading[-1], flush=True)

    common = {
        "algorithm": "xgboost",
        "num_round": ROUNDS,
        "objective": "binary:logistic",
        "tree_method": "hist",
    }
    jobs: list[tuple[str, dict[str, object], bool, int | None]] = [
        ("sagecraft, in memory (streaming=false)", {"streaming": "false"}, False, None),
        (
            "sagecraft, streamed (QuantileDMatrix)",
            {"streaming": "true", "external_memory": "false"},
            False,
            None,
        ),
        (
            "sagecraft, streamed, external memory",
            {"streaming": "true", "external_memory": "true"},
            False,
            None,
        ),
        ("sagecraft, Pipe mode (streamed, auto)", {}, True, None),
        (
            f"sagecraft, external memory, in a cgroup of {size // 3 / 2**20:,.0f} MiB (a third of the file)",
            {"streaming": "true", "external_memory": "true"},
            False,
            size // 3,
        ),
    ]
    training = []
    seconds, peak, status, tail = run([python, "-c", PLAIN_SCRIPT.format(path=str(path), rounds=ROUNDS)])
    assert status == 0, tail
    plain_seconds, plain_peak = seconds, peak
    training.append(
        f"| plain script: pandas.read_csv + xgboost.train | {seconds:.1f} | 1.00x | "
        f"{peak / 2**20:,.0f} | 1.00x | ok |"
    )
    print(training[-1], flush=True)
    with memory_cgroup(size // 3) as procs:
        if procs is not None:
            seconds, peak, status, tail = run(
                [python, "-c", PLAIN_SCRIPT.format(path=str(path), rounds=ROUNDS)], procs=procs
            )
            if status == 0:
                timing = f"{seconds:.1f} | {plain_seconds / seconds:.2f}x"
                outcome, share = "ok", f"{peak / plain_peak:.2f}x"
            else:
                timing, share = f"killed after {seconds:.1f} | -", "-"
                outcome = f"killed ({status}): the kernel's OOM killer, no message"
            training.append(
                f"| plain script, in a cgroup of {size // 3 / 2**20:,.0f} MiB | {timing} | "
                f"{peak / 2**20:,.0f} | {share} | {outcome} |"
            )
            print(training[-1], flush=True)
    for name, extra, pipe, limit in jobs:
        base = job(WORK / "job", path, {**common, **extra}, pipe=pipe)
        env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base)}
        writer = feed(base / "input" / "data" / "train_0", path) if pipe else None
        with memory_cgroup(limit) if limit else contextlib.nullcontext() as procs:
            if limit and procs is None:
                training.append(f"| {name} | (no writable memory cgroup here) | | | | |")
                continue
            seconds, peak, status, tail = run(sagecraft, env, procs)
        if writer is not None:
            writer.join(5)
        outcome = "ok" if status == 0 else f"failed ({status}): {tail.splitlines()[-1] if tail else ''}"
        training.append(
            f"| {name} | {seconds:.1f} | {plain_seconds / seconds:.2f}x | {peak / 2**20:,.0f} | "
            f"{peak / plain_peak:.2f}x | {outcome} |"
        )
        print(training[-1], flush=True)
    shutil.rmtree(WORK / "job", ignore_errors=True)

    text = "\n".join(
        [
            "# Training from a large CSV channel",
            "",
            f"`python3 bench/training_data.py --mib {args.mib}` on {platform.node()}: "
            f"{len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}, "
            f"{time.strftime('%Y-%m-%d')}. One header-less CSV file of {size / 2**20:,.0f} MiB, label "
            f"first, {FEATURES} float features. Every run a fresh process; peak = its peak RSS "
            "(ru_maxrss, as the kernel counts it: file pages it mapped included); ratios against "
            "the first row of each table, in the same run.",
            "",
            "## Reading the channel",
            "",
            "| reader | seconds | MiB/s | speed vs pandas | peak RSS MiB | peak vs pandas |",
            "|---|---|---|---|---|---|",
            *reading,
            "",
            f"## Training XGBoost ({ROUNDS} rounds of `hist`)",
            "",
            "| job | seconds | speed vs the script | peak RSS MiB | peak vs the script | outcome |",
            "|---|---|---|---|---|---|",
            *training,
            "",
        ]
    )
    args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
