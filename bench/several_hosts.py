"""Training on 1 and 3 hosts, side by side: wall time, peak memory per host, model quality.

    python3 bench/several_hosts.py               # 2,000,000 rows x 20 features (about 330 MB of CSV)
    python3 bench/several_hosts.py --rows 200000 --algorithm random_forest

Every run is real `sagecraft train` processes (sagecraft.local_cluster: each host its own
SageMaker tree, in a private network namespace, on this one machine), on the same rows: one host
on all of them; three hosts with the rows sharded (ShardedByS3Key, a file each) and replicated
(FullyReplicated, every host holds all six files and trains on two). Peak memory is each host
process's peak RSS (getrusage); quality is the saved model's accuracy on held-out rows. The three
hosts share this machine's cores, so the time column shows the cost of the collective here, not
the speed-up of three machines. Results go to bench/SEVERAL_HOSTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WORK = HERE.parent / ".bench" / "several-hosts"
FEATURES = 20
PARTS = 6


def _rows(seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count, FEATURES)).astype(np.float32)
    score = x[:, :5].sum(axis=1) - x[:, 5] * x[:, 6] + rng.normal(scale=0.5, size=count)
    return x, (score > 0).astype(np.int32)


def _write_csv(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, np.column_stack([y, x]), delimiter=",", fmt=["%d"] + ["%.5f"] * FEATURES)


def _tree(base: Path, host: str, hosts: list[str], hyperparameters: dict, distribution: str) -> Path:
    config = base / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "hyperparameters.json").write_text(json.dumps({k: str(v) for k, v in hyperparameters.items()}))
    (config / "inputdataconfig.json").write_text(
        json.dumps(
            {
                "train": {
                    "TrainingInputMode": "File",
                    "S3DistributionType": distribution,
                    "ContentType": "text/csv",
                }
            }
        )
    )
    (config / "resourceconfig.json").write_text(json.dumps({"current_host": host, "hosts": hosts}))
    return base


def _accuracy(model_dir: Path, algorithm: str, x: np.ndarray, y: np.ndarray) -> float:
    from sagecraft.testing import load

    model = load(model_dir)
    import pandas as pd

    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(FEATURES)]).astype(np.float32)
    predicted = np.asarray(model.predict(frame)).astype(np.int32)
    return float(np.mean(predicted == y))


def _run(name: str, parts: list[Path], hosts: int, distribution: str, hyperparameters: dict) -> dict:
    from sagecraft.local_cluster import LocalCluster

    folder = WORK / "runs" / name
    shutil.rmtree(folder, ignore_errors=True)
    names = [f"algo-{i + 1}" for i in range(hosts)]
    bases = []
    for index, host in enumerate(names):
        base = _tree(folder / host, host, names, hyperparameters, distribution)
        data = base / "input" / "data" / "train"
        data.mkdir(parents=True)
        mine = parts if distribution == "FullyReplicated" else parts[index::hosts]
        for part in mine:
            os.link(part, data / part.name)
        bases.append(base)
    began = time.monotonic()
    results = LocalCluster(bases, names).start().wait(timeout=3600)
    wall = time.monotonic() - began
    failed = [r for r in results if r.returncode != 0]
    if failed:
        raise SystemExit(f"{name}: {failed[0].name} failed: {failed[0].failure or failed[0].stderr[-2000:]}")
    return {
        "wall_s": wall,
        "peak_rss": [r.peak_rss_bytes or 0 for r in results],
        "model_dir": bases[0] / "model",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--algorithm", choices=["xgboost", "random_forest"], default="xgboost")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each setting; medians are shown")
    args = parser.parse_args()
    from sagecraft.local_cluster import LocalCluster

    if not LocalCluster.available():
        raise SystemExit("needs unprivileged user, network and mount namespaces (unshare)")
    data = WORK / f"data-{args.rows}"
    parts = [data / f"part-{i}.csv" for i in range(PARTS)]
    if not all(p.exists() for p in parts):
        x, y = _rows(0, args.rows)
        for i, chunk in enumerate(np.array_split(np.arange(args.rows), PARTS)):
            _write_csv(parts[i], x[chunk], y[chunk])
    test_x, test_y = _rows(1, 50_000)
    hyperparameters = (
        {"algorithm": "xgboost", "num_round": 50, "max_depth": 6, "objective": "binary:logistic"}
        if args.algorithm == "xgboost"
        else {"algorithm": "random_forest", "task": "classification", "n_estimators": 30, "max_depth": 12}
    )
    settings = [
        ("1 host", 1, "FullyReplicated"),
        ("3 hosts, sharded", 3, "ShardedByS3Key"),
        ("3 hosts, replicated", 3, "FullyReplicated"),
    ]
    tiny = WORK / "data-tiny" / "part-0.csv"
    if not tiny.exists():
        _write_csv(tiny, *_rows(2, 200))
    fixed = float(
        np.median(
            [
                max(_run("fixed-cost", [tiny], 1, "FullyReplicated", hyperparameters)["peak_rss"])
                for _ in range(args.repeats)
            ]
        )
    )
    print(f"fixed cost (a job on 200 rows): peak {fixed / 2**20:.0f} MiB", flush=True)
    rows = []
    for label, hosts, distribution in settings:
        runs = [
            _run(label.replace(" ", "-").replace(",", ""), parts, hosts, distribution, hyperparameters)
            for _ in range(args.repeats)
        ]
        wall = float(np.median([r["wall_s"] for r in runs]))
        peak = float(np.median([max(r["peak_rss"]) for r in runs]))
        accuracy = _accuracy(runs[-1]["model_dir"], args.algorithm, test_x, test_y)
        rows.append((label, wall, peak, accuracy))
        print(
            f"{label}: {wall:.1f} s, peak {peak / 2**20:.0f} MiB per host, accuracy {accuracy:.4f}",
            flush=True,
        )
    size = sum(p.stat().st_size for p in parts)
    base_wall, base_peak, base_accuracy = rows[0][1], rows[0][2], rows[0][3]
    lines = [
        f"# Training on several hosts ({args.algorithm})",
        "",
        f"{args.rows:,} rows x {FEATURES} features ({size / 2**20:.0f} MiB of CSV in {PARTS} files), "
        f"`{json.dumps(hyperparameters)}`; medians of {args.repeats} runs; {os.cpu_count()} cores "
        f"({platform.machine()}), every host on this one machine. Written by "
        "`python3 bench/several_hosts.py"
        + (f" --rows {args.rows}" if args.rows != 2_000_000 else "")
        + (f" --algorithm {args.algorithm}" if args.algorithm != "xgboost" else "")
        + "`.",
        "",
        "| run | wall time | vs 1 host | peak RSS per host (largest) | of which the data's "
        "| vs 1 host | test accuracy | vs 1 host |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, wall, peak, accuracy in rows:
        lines.append(
            f"| {label} | {wall:.1f} s | {wall / base_wall:.2f}x | {peak / 2**20:.0f} MiB | "
            f"{(peak - fixed) / 2**20:.0f} MiB | {(peak - fixed) / (base_peak - fixed):.2f}x | "
            f"{accuracy:.4f} | {accuracy - base_accuracy:+.4f} |"
        )
    lines += [
        "",
        f'"Of which the data\'s": the peak above the fixed cost of a job ({fixed / 2**20:.0f} MiB: '
        "Python, pandas, pyarrow, XGBoost, measured as the same job on 200 rows), which no "
        "number of hosts divides. The hosts share this machine's cores, so the wall time shows the "
        "collective's overhead here; on separate instances each host has its own cores.",
    ]
    out = HERE / ("SEVERAL_HOSTS.md" if args.algorithm == "xgboost" else f"SEVERAL_HOSTS_{args.algorithm}.md")
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
