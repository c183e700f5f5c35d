"""Load, soak and overload: `sagecraft serve` held under load for minutes, loopback only.

    python3 bench/soak.py                 # about 5 minutes; writes bench/SOAK.md
    python3 bench/soak.py --minutes 1     # shorter soak phases

Three phases, each against a fresh server on this machine's cores with default settings:
1. single-model soak: the XGBoost model of bench/serving.py, wrk with 16 keep-alive connections
   alternating 1-row CSV and 100-row JSON requests in 10-second windows; after every window the
   server's proportional memory (PSS of all its processes) is sampled; meanwhile a thread sends
   hostile requests (a gzip bomb, a Parquet body declaring 10 million rows, values beyond float32,
   a half-sent request head, a client leaving mid-body, ...), each of which must get its 4xx;
2. multi-model soak: a forest and an XGBoost model invoked alternately while a third model is loaded
   and unloaded again and again in the background (SageMaker's MME traffic);
3. overload: 400 concurrent clients sending 1,000-row requests, more than the workers may hold
   (SAGECRAFT_MAX_CONCURRENT_REQUESTS, 128 per worker): the excess must get fast 503s with
   Retry-After instead of waiting in a queue.
Pass criteria (printed and written): no error answer and no socket error in phases 1-2 (so no
good request lost to the hostile ones), every hostile request answered as expected, memory after
the soak within 10% (and 30 MiB) of memory after the first window, every phase-3 answer a 200 or a
503 with Retry-After, 503s answered faster than 200s.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import http.client
import io
import json
import platform
import shutil
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from serving import (
    CORES,
    HERE,
    WORK,
    Result,
    ensure_model,
    ensure_tools,
    fix_port,
    sagecraft_server,
    training_data,
    write_bodies,
    wrk,
)

WINDOW_S = 10
CONNECTIONS = 16
OVERLOAD_CLIENTS = 400
MEMORY_GROWTH_BOUND = 0.10
MEMORY_GROWTH_SLACK = 30 << 20


def _soak(
    server_url: str,
    bodies: list[tuple[Path, str]],
    minutes: float,
    memory: Callable[[], int],
    side_task: Callable[[threading.Event], None] | None = None,
) -> tuple[list[Result], list[int]]:
    """wrk windows, alternating bodies, until `minutes` pass; memory sampled after each window."""
    results, samples = [], []
    stop = threading.Event()
    side = threading.Thread(target=side_task, args=(stop,)) if side_task else None
    if side:
        side.start()
    deadline = time.monotonic() + minutes * 60
    window = 0
    try:
        while time.monotonic() < deadline:
            body, content_type = bodies[window % len(bodies)]
            results.append(wrk(server_url, body, content_type, WINDOW_S, CONNECTIONS))
            samples.append(memory())
            window += 1
    finally:
        stop.set()
        if side:
            side.join()
    return results, samples


def _hostile_bodies(width: int) -> list[tuple[str, bytes, dict[str, str], int]]:
    """(name, body, headers, expected status) of hostile requests for a model of `width` features:
    each small as sent, large or wrong once decoded (see tests/test_body_expansion.py)."""
    good_row = ",".join(["0.5"] * width)
    parquet = io.BytesIO()
    pq.write_table(
        pa.table({f"c{i}": np.zeros(10_000_000) for i in range(width)}), parquet, compression="zstd"
    )
    csv = {"Content-Type": "text/csv"}
    return [
        (
            "gzip bomb (1 GiB of zeros)",
            gzip.compress(b"0" * (1 << 30), 9),
            {**csv, "Content-Encoding": "gzip"},
            413,
        ),
        (
            "Parquet declaring 10 million rows",
            parquet.getvalue(),
            {"Content-Type": "application/x-parquet"},
            413,
        ),
        ("a value beyond float32", ",".join(["1e39"] + ["0.5"] * (width - 1)).encode(), csv, 400),
        ("truncated gzip", gzip.compress(good_row.encode())[:-12], {**csv, "Content-Encoding": "gzip"}, 400),
        ("an unknown Content-Encoding", good_row.encode(), {**csv, "Content-Encoding": "br"}, 415),
        # 6 MB that decode to 3 million rows: answered, slice by slice, each within the bound.
        ("libsvm labels only", b"1\n" * 3_000_000, {"Content-Type": "text/libsvm"}, 200),
    ]


def _hostile(
    port: int, bodies: list[tuple[str, bytes, dict[str, str], int]], tally: dict[str, int]
) -> Callable[[threading.Event], None]:
    """A side task sending the hostile bodies in turn, plus a half-sent request head and a
    client that leaves mid-body each round, while wrk sends good traffic; `tally` counts the
    hostile requests and those whose answer was not the expected one."""

    def run(stop: threading.Event) -> None:
        while not stop.is_set():
            for name, body, headers, expected in bodies:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                try:
                    connection.request("POST", "/invocations", body=body, headers=headers)
                    response = connection.getresponse()
                    response.read()
                    status = response.status
                except OSError:
                    status = -1
                finally:
                    connection.close()
                tally["sent"] += 1
                if status != expected:
                    tally["unexpected"] += 1
                    print(f"hostile {name}: {status}, expected {expected}", flush=True)
            held = socket.create_connection(("127.0.0.1", port))
            held.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\n")  # never finished
            leaving = socket.create_connection(("127.0.0.1", port))
            leaving.sendall(
                b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 99999"
                b"\r\nContent-Type: text/csv\r\n\r\n0.5,"
            )
            leaving.close()
            tally["sent"] += 2
            stop.wait(0.5)
            held.close()

    return run


def _post_json(port: int, path: str, document: dict | None, method: str = "POST") -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request(
        method,
        path,
        body=json.dumps(document) if document else None,
        headers={"Content-Type": "application/json"},
    )
    response = connection.getresponse()
    response.read()
    return response.status


async def _overload(url: str, body: bytes, clients: int, seconds: float) -> dict[str, list[float]]:
    """`clients` concurrent connections posting `body` back to back; latencies (ms) by outcome."""
    latencies: dict[str, list[float]] = {}
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=120)
    ) as session:

        async def client() -> None:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers={"Content-Type": "text/csv"}) as response:
                        await response.read()
                        kind = str(response.status)
                        if response.status == 503 and response.headers.get("Retry-After") != "1":
                            kind = "503 without Retry-After"
                except (TimeoutError, aiohttp.ClientError) as exc:
                    kind = f"error {type(exc).__name__}"
                latencies.setdefault(kind, []).append((time.perf_counter() - started) * 1000)
                if kind.startswith("503"):
                    await asyncio.sleep(0.05)  # a polite client; SageMaker's router retries later

        await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--minutes", type=float, default=2.0, help="length of each soak phase")
    parser.add_argument("--output", type=Path, default=HERE / "SOAK.md")
    args = parser.parse_args()
    ensure_tools()
    WORK.mkdir(exist_ok=True)
    xgb_base, forest_base = ensure_model("xgboost"), ensure_model("forest")
    _, x = training_data()
    bodies = write_bodies(x)
    mixed = [(bodies[("csv", 1)], "text/csv"), (bodies[("json", 100)], "application/json")]
    lines: list[str] = []
    verdicts: list[tuple[str, bool]] = []

    # 1. single-model soak, hostile requests mixed into the good traffic
    server = fix_port(sagecraft_server("sagecraft", xgb_base)).start()
    tally = {"sent": 0, "unexpected": 0}
    try:
        print(f"phase 1: single-model soak with hostile requests, {args.minutes:g} min", flush=True)
        results, memory = _soak(
            server.url,
            mixed,
            args.minutes,
            lambda: server.memory("Pss"),
            _hostile(server.port, _hostile_bodies(x.shape[1]), tally),
        )
    finally:
        server.stop()
    lines += _soak_table(
        f"Single-model endpoint (XGBoost, default workers; hostile requests alongside: {tally['sent']:,})",
        results,
        memory,
    )
    lines.append(
        "Hostile requests, in turn: a 1 GiB gzip bomb, a Parquet body declaring 10 "
        "million rows, a value beyond float32, a truncated gzip, an unknown "
        "Content-Encoding, 3 million libsvm lines of labels only (answered slice by "
        "slice), a request head never "
        f"finished, a client leaving mid-body. Answered otherwise than expected: "
        f"{tally['unexpected']}.\n"
    )
    verdicts += _soak_verdicts("single-model", results, memory)
    verdicts.append(
        (
            "single-model: every hostile request refused as expected, no good request lost",
            tally["unexpected"] == 0 and tally["sent"] > 0,
        )
    )

    # 2. multi-model soak with loads and unloads alongside
    base = WORK / "soak-mme"
    for name, source in (("xgb", xgb_base), ("forest", forest_base), ("churn", forest_base)):
        target = base / "models" / name / "model"
        if not target.exists():
            shutil.copytree(source / "model", target)
    server = fix_port(sagecraft_server("sagecraft-mme", base, SAGEMAKER_MULTI_MODEL="true")).start()
    cycles = {"loads": 0, "failures": 0}

    def churn(stop: threading.Event) -> None:
        url = str(base / "models" / "churn" / "model")
        while not stop.is_set():
            loaded = _post_json(server.port, "/models", {"model_name": "churn", "url": url})
            unloaded = _post_json(server.port, "/models/churn", None, method="DELETE")
            cycles["loads"] += 1
            cycles["failures"] += (loaded != 200) + (unloaded != 200)
            stop.wait(1)

    try:
        for name in ("xgb", "forest"):
            status = _post_json(
                server.port, "/models", {"model_name": name, "url": str(base / "models" / name / "model")}
            )
            assert status == 200, f"loading {name}: {status}"
        print(f"phase 2: multi-model soak, {args.minutes:g} min", flush=True)
        server.path = "/models/xgb/invoke"
        half = args.minutes / 2
        results, memory = _soak(server.url, mixed, half, lambda: server.memory("Pss"), churn)
        server.path = "/models/forest/invoke"
        more, more_memory = _soak(server.url, mixed, half, lambda: server.memory("Pss"), churn)
        results, memory = results + more, memory + more_memory
    finally:
        server.stop()
    lines += _soak_table(
        "Multi-model endpoint (XGBoost then forest, a third model loaded and "
        f"unloaded {cycles['loads']} times alongside)",
        results,
        memory,
    )
    lines.append(f"Load/unload cycles: {cycles['loads']}, failed calls: {cycles['failures']}.\n")
    verdicts += _soak_verdicts("multi-model", results, memory)
    verdicts.append(("multi-model: every load and unload succeeded", cycles["failures"] == 0))

    # 3. overload
    server = fix_port(sagecraft_server("sagecraft", xgb_base)).start()
    try:
        print(f"phase 3: overload, {OVERLOAD_CLIENTS} clients", flush=True)
        body = "\n".join(",".join(f"{v:.4f}" for v in row) for row in x[:1000]).encode()
        latencies = asyncio.run(_overload(server.url, body, OVERLOAD_CLIENTS, 20))
    finally:
        server.stop()
    lines += _overload_table(latencies)
    outcomes = set(latencies)
    verdicts.append(("overload: every answer a 200 or a 503 with Retry-After", outcomes <= {"200", "503"}))
    verdicts.append(
        (
            "overload: 503s answered faster than 200s (median)",
            "503" in latencies
            and statistics.median(latencies["503"]) < statistics.median(latencies.get("200", [float("inf")])),
        )
    )

    header = [
        "# Load, soak and overload",
        "",
        f"`python3 bench/soak.py --minutes {args.minutes:g}` on {platform.node() or 'this machine'}: "
        f"{CORES} cores, {platform.python_version()}, {time.strftime('%Y-%m-%d')}. Loopback only; wrk "
        f"with {CONNECTIONS} keep-alive connections in {WINDOW_S}-second windows alternating 1-row CSV "
        "and 100-row JSON requests; memory is the PSS of all the server's processes.",
        "",
        "| check | result |",
        "|---|---|",
        *(f"| {name} | {'met' if ok else 'MISSED'} |" for name, ok in verdicts),
        "",
    ]
    text = "\n".join(header + lines)
    args.output.write_text(text)
    print(text)
    return 0 if all(ok for _, ok in verdicts) else 1


def _soak_table(title: str, results: list[Result], memory: list[int]) -> list[str]:
    rps = [r.rps for r in results]
    p99 = [r.p99_ms for r in results]
    errors = sum(r.errors for r in results)
    requests = sum(r.rps * WINDOW_S for r in results)
    return [
        f"## {title}",
        "",
        "| windows | requests | errors | req/s median | p99 ms median (max) | PSS first window | "
        "PSS last window | PSS max |",
        "|---|---|---|---|---|---|---|---|",
        f"| {len(results)} | {requests:,.0f} | {errors} | {statistics.median(rps):,.0f} | "
        f"{statistics.median(p99):.1f} ({max(p99):.1f}) | {memory[0] >> 20} MiB | "
        f"{memory[-1] >> 20} MiB | {max(memory) >> 20} MiB |",
        "",
    ]


def _soak_verdicts(phase: str, results: list[Result], memory: list[int]) -> list[tuple[str, bool]]:
    growth = memory[-1] - memory[0]
    bound = max(memory[0] * MEMORY_GROWTH_BOUND, MEMORY_GROWTH_SLACK)
    return [
        (f"{phase}: no error answers or socket errors", sum(r.errors for r in results) == 0),
        (
            f"{phase}: memory growth {growth / 2**20:+.1f} MiB within "
            f"{MEMORY_GROWTH_BOUND:.0%} / {MEMORY_GROWTH_SLACK >> 20} MiB",
            growth <= bound,
        ),
    ]


def _overload_table(latencies: dict[str, list[float]]) -> list[str]:
    rows = [
        f"## Overload: {OVERLOAD_CLIENTS} concurrent clients, 1,000-row CSV requests, 20 s",
        "",
        "| answer | count | p50 ms | p99 ms |",
        "|---|---|---|---|",
    ]
    for kind in sorted(latencies):
        values = latencies[kind]
        rows.append(
            f"| {kind} | {len(values):,} | {_percentile(values, 50):.1f} | {_percentile(values, 99):.1f} |"
        )
    return [*rows, ""]


if __name__ == "__main__":
    sys.exit(main())
