"""One large asynchronous-inference payload through `sagecraft serve`: rows out, time, peak memory.

    python3 bench/large_payload.py            # 1 GiB of 20-feature CSV rows (about a minute)
    python3 bench/large_payload.py --mib 200

Uses the XGBoost model of bench/serving.py (trained here if missing), one worker process, and a
body limit raised past the payload, as an asynchronous endpoint would be configured. The body is
sent streaming and the answer read streaming, so the client holds neither.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from serving import WORK, ensure_model, free_port, training_data, write_bodies


def _status_field(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) >> 10
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=1024)
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    _, x = training_data()
    base = ensure_model("xgboost")
    block = write_bodies(x)[("csv", 10_000)].read_bytes() + b"\n"
    port = free_port()
    env = dict(
        os.environ,
        SAGEMAKER_BASE_DIR=str(base),
        SAGEMAKER_BIND_TO_PORT=str(port),
        SAGECRAFT_BIND_HOST="127.0.0.1",
        SAGEMAKER_MODEL_SERVER_WORKERS="1",
        SAGECRAFT_MAX_PAYLOAD_MB=str(args.mib + 100),
    )
    server = subprocess.Popen(
        ["sagecraft", "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(600):
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                connection.request("GET", "/ping")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=900)
        connection.request("POST", "/invocations", block, {"Content-Type": "text/csv"})
        connection.getresponse().read()  # warm: every library and thread in place
        before = _status_field(server.pid, "VmRSS")
        repeats = args.mib * 1024 * 1024 // len(block)
        started = time.perf_counter()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=900)
        connection.request(
            "POST",
            "/invocations",
            (block for _ in range(repeats)),
            {"Content-Type": "text/csv", "Content-Length": str(repeats * len(block))},
        )
        response = connection.getresponse()
        lines = 0
        while chunk := response.read(1 << 20):
            lines += chunk.count(b"\n")
        elapsed = time.perf_counter() - started
        print(
            f"status {response.status}: {repeats * len(block) >> 20} MiB, {repeats * 10_000} rows in, "
            f"{lines} lines out, {elapsed:.0f} s ({lines / elapsed:.0f} rows/s); server RSS "
            f"{before} MiB before, peak {_status_field(server.pid, 'VmHWM')} MiB"
        )
        return 0 if response.status == 200 and lines == repeats * 10_000 else 1
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(40)


if __name__ == "__main__":
    sys.exit(main())
