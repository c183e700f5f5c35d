"""Serving benchmark: sagecraft against the HTTP floor and the stack users run today, side by side.

    python3 bench/serving.py                 # about 15 minutes on 2 cores; writes bench/RESULTS.md
    python3 bench/serving.py --quick         # one short round, to check that everything runs

Loopback only, bounded in time. It installs wrk (Debian), a virtual environment with gunicorn and
Flask, and MLServer 1.7 with its scikit-learn and XGBoost runtimes in a virtual environment of its
own (uvloop pinned to 0.21, see shared/docs/benchmark-notes.md) under .bench/, trains a 100-tree
XGBoost model and a 100-tree forest (depth 12) on 20 features with the real `sagecraft train`, then
drives each server with wrk (16 keep-alive connections) for single-row, 100-row and 10,000-row CSV
and JSON requests. Servers alternate run by run (A B A B) and the table quotes the median of the
rounds, with ratios to sagecraft taken within the same run. Also measured: parse+predict in-process
(no HTTP), /ping latency during 10,000-row load, the forest's single-row latency at low load, the
memory of 1 and 2 workers, a multi-model endpoint, and a batch-transform mini-batch.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import in_process  # bench/in_process.py (this script's folder is on sys.path)
import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = REPO / ".bench"
CORES = os.cpu_count() or 1
FEATURES = 20
ROWS = (1, 100, 10_000)


# --- setup -----------------------------------------------------------------------------------


def ensure_tools() -> Path:
    """wrk from Debian's packages; gunicorn and Flask in a venv that sees our libraries."""
    if shutil.which("wrk") is None:
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, stdout=subprocess.DEVNULL)
    venv = WORK / "peers-venv"
    if not (venv / "bin" / "gunicorn").exists():
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "flask>=3", "gunicorn>=22"], check=True)
    return venv


MLSERVER_PACKAGES = [
    "mlserver==1.7.*",
    "mlserver-sklearn==1.7.*",
    "mlserver-xgboost==1.7.*",
    "uvloop==0.21.0",
]


def ensure_mlserver() -> Path | None:
    """MLServer in its own venv; None (and MLServer left out of the run) if it cannot install."""
    venv = WORK / "mlserver-venv"
    if not (venv / "bin" / "mlserver").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        done = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", *MLSERVER_PACKAGES], check=False, timeout=1200
        )
        if done.returncode != 0:
            print("MLServer could not be installed; it is left out of this run", flush=True)
            return None
    return venv


def mlserver_folder(venv: Path, train_csv: Path, http_port: int, tuned: bool) -> Path:
    folder = WORK / ("mlserver-tuned" if tuned else "mlserver-default")
    if not (folder / "xgboost" / "model.json").exists():
        subprocess.run(
            [
                str(venv / "bin" / "python"),
                str(HERE / "peers" / "mlserver_models.py"),
                str(train_csv),
                str(folder),
            ],
            check=True,
        )
    settings = {
        "http_port": http_port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        "host": "127.0.0.1",
    }
    if tuned:
        settings["debug"] = False
    (folder / "settings.json").write_text(json.dumps(settings))
    return folder


def v2_body(block: np.ndarray) -> str:
    return json.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": list(block.shape),
                    "datatype": "FP64",
                    "data": np.round(block, 4).ravel().tolist(),
                }
            ]
        }
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def train(name: str, hyperparameters: dict[str, str], data: str) -> Path:
    base = WORK / "models" / name
    shutil.rmtree(base, ignore_errors=True)
    (base / "input" / "config").mkdir(parents=True)
    (base / "input" / "data" / "train").mkdir(parents=True)
    (base / "input" / "data" / "train" / "train.csv").write_text(data)
    (base / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    subprocess.run(
        ["sagecraft", "train"],
        env=dict(os.environ, SAGEMAKER_BASE_DIR=str(base)),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return base


# The benchmark's models: 100 trees each on 20 features (bench/soak.py and large_payload.py too).
BENCH_MODELS = {
    "xgboost": {"algorithm": "xgboost", "num_round": "100", "max_depth": "6", "objective": "binary:logistic"},
    "forest": {
        "algorithm": "random_forest",
        "task": "classification",
        "ntree": "100",
        "max_depth": "12",
        "n_jobs": "-1",
    },
}


def ensure_model(name: str) -> Path:
    """The training tree of one of BENCH_MODELS, trained now unless an earlier run left it."""
    base = WORK / "models" / name
    if (base / "model" / "manifest.json").exists():
        return base
    return train(name, BENCH_MODELS[name], training_data()[0])


def training_data(rows: int = 20_000) -> tuple[str, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, FEATURES))
    y = x[:, 0] + x[:, 1] * x[:, 2] - x[:, 3] ** 2 + rng.normal(scale=0.5, size=rows) > 0
    lines = (f"{int(label)}," + ",".join(f"{v:.4f}" for v in row) for label, row in zip(y, x, strict=True))
    return "\n".join(lines) + "\n", x


def write_bodies(x: np.ndarray) -> dict[tuple[str, int], Path]:
    bodies = {}
    for rows in ROWS:
        block = x[:rows]
        csv_path = WORK / f"body-{rows}.csv"
        csv_path.write_text("\n".join(",".join(f"{v:.4f}" for v in row) for row in block))
        json_path = WORK / f"body-{rows}.json"
        json_path.write_text(json.dumps({"instances": np.round(block, 4).tolist()}))
        v2_path = WORK / f"body-{rows}.v2.json"
        v2_path.write_text(v2_body(block))
        bodies[("csv", rows)], bodies[("json", rows)] = csv_path, json_path
        bodies[("v2", rows)] = v2_path
    return bodies


# --- servers ---------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    path: str = "/invocations"
    health: str = "/ping"
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def start(self) -> Server:
        env = dict(os.environ, **self.env)
        command = [part.replace("{port}", str(self.port)) for part in self.command]
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                connection.request("GET", self.health)
                if connection.getresponse().status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not become healthy")

    def pids(self) -> list[int]:
        assert self.process is not None
        found = subprocess.run(
            ["pgrep", "-g", str(os.getpgid(self.process.pid))], capture_output=True, text=True, check=False
        ).stdout.split()
        return [int(p) for p in found]

    def memory(self, field_name: str, combine: object = sum, workers_only: bool = False) -> int:
        """A /proc field over the server's processes (Pss from smaps_rollup, or VmHWM), summed
        or combined as given (max: the busiest process)."""
        values = []
        assert self.process is not None
        for pid in self.pids():
            if workers_only and pid == self.process.pid:
                continue
            source = "smaps_rollup" if field_name == "Pss" else "status"
            try:
                text = Path(f"/proc/{pid}/{source}").read_text()
            except FileNotFoundError:  # a short-lived child (a subprocess) that has ended
                continue
            for line in text.splitlines():
                if line.startswith(field_name + ":"):
                    values.append(int(line.split()[1]) * 1024)
        return combine(values) if values else 0

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


def sagecraft_server(name: str, base: Path, **env: str) -> Server:
    return Server(
        name,
        ["sagecraft", "serve"],
        {
            "SAGEMAKER_BASE_DIR": str(base),
            "SAGEMAKER_BIND_TO_PORT": "{port}",
            "SAGECRAFT_BIND_HOST": "127.0.0.1",
            **env,
        },
    )


def fix_port(server: Server) -> Server:
    server.env = {k: v.replace("{port}", str(server.port)) for k, v in server.env.items()}
    return server


# --- load ------------------------------------------------------------------------------------


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _latency(text: str, percentile: str) -> float:
    match = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", text, flags=re.M)
    return float(match.group(1)) * _UNITS[match.group(2)] if match else float("nan")


def wrk(url: str, body: Path, content_type: str, duration: float, connections: int) -> Result:
    env = dict(os.environ, BODY_FILE=str(body), CONTENT_TYPE=content_type)
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--latency",
            "--timeout",
            "30s",
            "-s",
            str(HERE / "post.lua"),
            url,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 60,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors:.*?timeout (\d+)", out)
    return Result(
        rps,
        _latency(out, "50"),
        _latency(out, "99"),
        (int(errors.group(1)) if errors else 0) + (int(socket_errors.group(1)) if socket_errors else 0),
    )


def ping_latencies(port: int, stop: threading.Event) -> list[float]:
    """/ping round trips (ms) on one keep-alive connection until `stop`."""
    samples = []
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    while not stop.is_set():
        started = time.perf_counter()
        connection.request("GET", "/ping")
        connection.getresponse().read()
        samples.append((time.perf_counter() - started) * 1000)
        time.sleep(0.01)
    return samples


# --- the run ---------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of A B A B (median quoted)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="one 2-second round")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.rounds = 2.0, 1
    WORK.mkdir(exist_ok=True)
    venv = ensure_tools()
    data, x = training_data()
    print("training the models with sagecraft train ...", flush=True)
    models = {name: train(name, hyperparameters, data) for name, hyperparameters in BENCH_MODELS.items()}
    bodies = write_bodies(x)
    train_csv = WORK / "train.csv"
    train_csv.write_text(data)
    mlserver_venv = ensure_mlserver()
    results: dict[tuple[str, str, str, int], list[Result]] = {}
    servers: list[Server] = []
    try:
        bare = fix_port(
            Server(
                "bare aiohttp",
                [sys.executable, str(HERE / "peers" / "bare_aiohttp.py"), "{port}", str(CORES)],
            )
        ).start()
        servers.append(bare)
        stacks: dict[str, list[Server]] = {}
        for algorithm, base in models.items():
            ours = fix_port(sagecraft_server(f"sagecraft {algorithm}", base)).start()
            flask = fix_port(
                Server(
                    f"flask {algorithm}",
                    [
                        str(venv / "bin" / "gunicorn"),
                        "-w",
                        str(CORES),
                        "-b",
                        "127.0.0.1:{port}",
                        "--chdir",
                        str(HERE / "peers"),
                        "--log-level",
                        "warning",
                        "flask_pandas:app",
                    ],
                    {"MODEL_DIR": str(base / "model"), "OMP_NUM_THREADS": "1"},
                )
            ).start()
            servers += [ours, flask]
            stacks[algorithm] = [ours, flask]
        mlservers: dict[str, Server] = {}
        if mlserver_venv is not None:
            for tuned in (True, False):
                port = free_port()
                folder = mlserver_folder(mlserver_venv, train_csv, port, tuned)
                label = "mlserver" if tuned else "mlserver (defaults)"
                env = {"OMP_NUM_THREADS": "1"} if tuned else {}
                mlservers[label] = Server(
                    label,
                    [str(mlserver_venv / "bin" / "mlserver"), "start", str(folder)],
                    env,
                    port=port,
                    health="/v2/health/ready",
                ).start()
                servers.append(mlservers[label])
        cases = [(a, fmt, rows) for a in models for fmt in ("csv", "json") for rows in ROWS]
        for round_index in range(args.rounds):
            for algorithm, fmt, rows in cases:
                order = [("sagecraft", stacks[algorithm][0]), ("flask+pandas", stacks[algorithm][1])]
                if fmt == "csv":  # the floor beside each algorithm's runs, not minutes apart
                    order.append(("bare aiohttp", bare))
                for label, server in mlservers.items():
                    if fmt == "json" and (label == "mlserver" or rows == 1):
                        order.append((label, server))
                if round_index % 2:
                    order.reverse()
                for label, server in order:
                    content_type = "text/csv" if fmt == "csv" else "application/json"
                    body, url = bodies[(fmt, rows)], server.url
                    if label.startswith("mlserver"):
                        body = bodies[("v2", rows)]
                        url = f"http://127.0.0.1:{server.port}/v2/models/{algorithm}/infer"
                    result = wrk(url, body, content_type, args.duration, args.connections)
                    results.setdefault((label, algorithm, fmt, rows), []).append(result)
                    print(
                        f"round {round_index + 1} {label:13} {algorithm:8} {fmt:4} {rows:>6} rows: "
                        f"{result.rps:9.0f} req/s  p50 {result.p50_ms:7.2f} ms  "
                        f"p99 {result.p99_ms:7.2f} ms  errors {result.errors}",
                        flush=True,
                    )
        extras = measure_extras(models, bodies, stacks, args)
    finally:
        for server in servers:
            server.stop()
    lines = report(results, extras, args)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def measure_extras(
    models: dict[str, Path], bodies: dict, stacks: dict, args: argparse.Namespace
) -> dict[str, object]:
    extras: dict[str, object] = {"v2 bytes": {rows: bodies[("v2", rows)].stat().st_size for rows in ROWS}}
    for algorithm, base in models.items():
        # Parse+predict without HTTP, as many processes as workers: what the same cores do.
        extras[f"inprocess {algorithm}"] = in_process.rows_per_second(
            base / "model", bodies[("csv", 10_000)], CORES, args.duration
        )
    forest = stacks["forest"][0]
    low = wrk(forest.url, bodies[("csv", 1)], "text/csv", args.duration, 1)
    extras["forest single-row low load"] = low
    # /ping while 10,000-row requests keep both cores busy.
    ours = stacks["xgboost"][0]
    stop = threading.Event()
    samples: list[float] = []
    pinger = threading.Thread(target=lambda: samples.extend(ping_latencies(ours.port, stop)))
    pinger.start()
    wrk(ours.url, bodies[("csv", 10_000)], "text/csv", args.duration, args.connections)
    stop.set()
    pinger.join()
    extras["ping during 10k load"] = (
        statistics.median(samples),
        float(np.percentile(samples, 99)),
        len(samples),
    )
    # Memory: the same forest served by 1 and by 2 worker processes (proportional set size).
    for workers in (1, 2):
        server = fix_port(
            sagecraft_server("pss", models["forest"], SAGEMAKER_MODEL_SERVER_WORKERS=str(workers))
        ).start()
        wrk(server.url, bodies[("csv", 1)], "text/csv", 1, 4)
        extras[f"pss {workers}"] = server.memory("Pss")
        server.stop()
    extras["model MiB"] = sum(p.stat().st_size for p in (models["forest"] / "model").iterdir()) >> 20
    # A multi-model endpoint holding both models.
    mme_base = WORK / "mme"
    shutil.rmtree(mme_base, ignore_errors=True)
    for name, base in models.items():
        shutil.copytree(base / "model", mme_base / "models" / name / "model")
    mme = fix_port(sagecraft_server("mme", mme_base, SAGEMAKER_MULTI_MODEL="true")).start()
    for name in models:
        connection = http.client.HTTPConnection("127.0.0.1", mme.port, timeout=60)
        connection.request(
            "POST",
            "/models",
            json.dumps({"model_name": name, "url": str(mme_base / "models" / name / "model")}),
            {"Content-Type": "application/json"},
        )
        assert connection.getresponse().status == 200
        mme.path = f"/models/{name}/invoke"
        extras[f"mme {name}"] = wrk(mme.url, bodies[("csv", 1)], "text/csv", args.duration, args.connections)
    mme.stop()
    # Batch transform: one MultiRecord mini-batch of 300,000 rows (about 50 MB).
    batch = fix_port(
        sagecraft_server(
            "batch", models["xgboost"], SAGEMAKER_BATCH="true", SAGEMAKER_MAX_PAYLOAD_IN_MB="100"
        )
    ).start()
    block = bodies[("csv", 10_000)].read_bytes() + b"\n"
    payload = block * 30
    before = batch.memory("VmRSS", max, workers_only=True)
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", batch.port, timeout=600)
    connection.request("POST", "/invocations", payload, {"Content-Type": "text/csv"})
    answer = connection.getresponse().read()
    elapsed = time.perf_counter() - started
    assert answer.count(b"\n") == 300_000, answer[:300]
    extras["batch"] = (
        len(payload) >> 20,
        300_000 / elapsed,
        before >> 20,
        batch.memory("VmHWM", max, workers_only=True) >> 20,
    )
    batch.stop()
    return extras


def _median(values: list[Result], attribute: str) -> float:
    return statistics.median(getattr(v, attribute) for v in values)


def report(results: dict, extras: dict, args: argparse.Namespace) -> list[str]:
    versions = {
        name: metadata.version(name)
        for name in (
            "sagecraft",
            "aiohttp",
            "xgboost-cpu",
            "scikit-learn",
            "pandas",
            "pyarrow",
            "flask",
            "gunicorn",
        )
        if _installed(name)
    }
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    lines = [
        "# Serving benchmark results",
        "",
        f"Run on {time.strftime('%Y-%m-%d')} with `python3 bench/serving.py"
        f"{' --quick' if args.quick else ''}`: {CORES} cores ({cpu}), Python "
        f"{platform.python_version()}, " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
        f"wrk, 1 thread, {args.connections} keep-alive connections, {args.duration:g} s per run, "
        f"{args.rounds} round(s) alternating the servers; medians. Every server runs {CORES} "
        "worker processes on the same cores as wrk. Ratios are sagecraft / peer.",
        "",
        "| model | body | rows | sagecraft req/s | p50 ms | p99 ms | rows/s | flask+pandas req/s "
        "| sagecraft / flask | bare aiohttp req/s | sagecraft / bare | MLServer req/s (V2 body bytes) "
        "| sagecraft / MLServer | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for algorithm in ("xgboost", "forest"):
        for fmt in ("csv", "json"):
            for rows in ROWS:
                ours = results.get(("sagecraft", algorithm, fmt, rows))
                if not ours:
                    continue
                flask = results[("flask+pandas", algorithm, fmt, rows)]
                bare = results.get(("bare aiohttp", algorithm, fmt, rows))
                ml = results.get(("mlserver", algorithm, fmt, rows))
                rps, f_rps = _median(ours, "rps"), _median(flask, "rps")
                errors = sum(r.errors for r in ours + flask + (bare or []) + (ml or []))
                bare_cells = (
                    f"{_median(bare, 'rps'):.0f} | {rps / _median(bare, 'rps'):.2f}" if bare else "- | -"
                )
                ml_cells = (
                    f"{_median(ml, 'rps'):.0f} ({extras['v2 bytes'][rows]}) | {rps / _median(ml, 'rps'):.1f}x"
                    if ml
                    else "- | -"
                )
                lines.append(
                    f"| {algorithm} | {fmt} | {rows} | {rps:.0f} | {_median(ours, 'p50_ms'):.2f} | "
                    f"{_median(ours, 'p99_ms'):.2f} | {rps * rows:.0f} | {f_rps:.0f} | "
                    f"{rps / f_rps:.1f}x | {bare_cells} | {ml_cells} | {errors} |"
                )
    defaults = {a: results.get(("mlserver (defaults)", a, "json", 1)) for a in ("xgboost", "forest")}
    if all(defaults.values()):
        lines += [
            "",
            "MLServer as installed (no OMP_NUM_THREADS, debug logging on), single-row V2 "
            "JSON: " + ", ".join(f"{a} {_median(r, 'rps'):.0f} req/s" for a, r in defaults.items()) + ".",
        ]
    low: Result = extras["forest single-row low load"]
    ping = extras["ping during 10k load"]
    batch = extras["batch"]
    lines += [
        "",
        "| measurement | value |",
        "|---|---|",
    ]
    for algorithm in ("xgboost", "forest"):
        rows_http = _median(results[("sagecraft", algorithm, "csv", 10_000)], "rps") * 10_000
        inproc = extras[f"inprocess {algorithm}"]
        lines.append(
            f"| {algorithm}: 10,000-row CSV over HTTP ({CORES} workers) vs parse+predict "
            f"without HTTP ({CORES} processes, a worker's threads each) | "
            f"{rows_http:.0f} vs {inproc:.0f} rows/s ({rows_http / inproc:.0%}) |"
        )
    lines += [
        f"| forest single row at low load (1 connection) | p50 {low.p50_ms:.2f} ms, p99 "
        f"{low.p99_ms:.2f} ms, {low.rps:.0f} req/s |",
        f"| /ping during 10,000-row XGBoost load | p50 {ping[0]:.1f} ms, p99 {ping[1]:.1f} ms "
        f"({ping[2]} pings) |",
        f"| memory (PSS) of the forest server ({extras['model MiB']} MiB model files) | 1 worker "
        f"{extras['pss 1'] >> 20} MiB, 2 workers {extras['pss 2'] >> 20} MiB "
        f"({extras['pss 2'] / extras['pss 1']:.2f}x) |",
        f"| multi-model endpoint, single-row CSV via /models/<name>/invoke | xgboost "
        f"{extras['mme xgboost'].rps:.0f} req/s, forest {extras['mme forest'].rps:.0f} req/s "
        "(one process) |",
        f"| batch transform: one {batch[0]} MiB MultiRecord mini-batch (300,000 rows, XGBoost) "
        f"| {batch[1]:.0f} rows/s; peak RSS of the busiest worker {batch[3]} MiB "
        f"(largest worker before the batch: {batch[2]} MiB) |",
    ]
    lines += ["", "## Targets", "", *targets(results, extras)]
    return lines


def targets(results: dict, extras: dict) -> list[str]:
    def single(label: str, algorithm: str, fmt: str = "csv") -> float | None:
        found = results.get((label, algorithm, fmt, 1))
        return _median(found, "rps") if found else None

    rows = []
    for algorithm in ("xgboost", "forest"):
        ours, bare = single("sagecraft", algorithm), single("bare aiohttp", algorithm)
        rows.append((f"{algorithm} single row >= 50% of the bare-aiohttp floor", ours / bare, 0.5, "{:.3f}"))
        rows.append(
            (
                f"{algorithm} single row >= 5x gunicorn+Flask+pandas",
                ours / single("flask+pandas", algorithm),
                5,
                "{:.1f}x",
            )
        )
        ml = single("mlserver", algorithm, "json")
        if ml:
            rows.append(
                (
                    f"{algorithm} single row >= 10x MLServer (JSON)",
                    single("sagecraft", algorithm, "json") / ml,
                    10,
                    "{:.1f}x",
                )
            )
        http = _median(results[("sagecraft", algorithm, "csv", 10_000)], "rps") * 10_000
        rows.append(
            (
                f"{algorithm} 10,000 rows: rows/s >= 80% of parse+predict without HTTP",
                http / extras[f"inprocess {algorithm}"],
                0.8,
                "{:.0%}",
            )
        )
    low = extras["forest single-row low load"]
    lines = ["| target | measured | met |", "|---|---|---|"]
    for name, value, goal, shape in rows:
        lines.append(f"| {name} | {shape.format(value)} | {'yes' if value >= goal else 'no'} |")
    lines.append(
        f"| forest single-row p50 <= 1 ms at low load | {low.p50_ms:.2f} ms | "
        f"{'yes' if low.p50_ms <= 1 else 'no'} |"
    )
    ping_p99 = extras["ping during 10k load"][1]
    lines.append(
        f"| /ping p99 < 50 ms during 10,000-row load | {ping_p99:.1f} ms | "
        f"{'yes' if ping_p99 < 50 else 'no'} |"
    )
    ratio = extras["pss 2"] / extras["pss 1"]
    lines.append(
        f"| RSS of 2 workers <= 1.3x one worker's | {ratio:.2f}x here "
        f"({extras['model MiB']} MiB model files); 1.04x for a 115 MiB forest in "
        f"tests/test_workers.py | {'yes' if ratio <= 1.3 else 'no'} |"
    )
    return lines


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
