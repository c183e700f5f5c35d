"""The main job on the bundled iris data: train both algorithms, serve each, and send requests.

Runs the real `sagecraft train` and `sagecraft serve` against SageMaker-shaped trees under
demo/work/, exactly as the container runs them under /opt/ml.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
JOBS = {
    # The R blog's job: header row, the label named by `target`, randomForest's mtry.
    "random_forest": {"algorithm": "random_forest", "target": "Species", "mtry": "2"},
    # The same data with XGBoost and SageMaker's built-in parameter names.
    "xgboost": {
        "algorithm": "xgboost",
        "target": "Species",
        "num_round": "50",
        "eta": "0.3",
        "max_depth": "3",
        "eval_metric": "mlogloss,merror",
    },
}
REQUEST = "5.1,3.5,1.4,0.2\n6.0,2.9,4.5,1.5\n6.9,3.1,5.4,2.1"


def tree(name: str) -> Path:
    base = WORK / name
    shutil.rmtree(base, ignore_errors=True)
    (base / "input" / "config").mkdir(parents=True)
    (base / "input" / "data" / "train").mkdir(parents=True)
    shutil.copy(HERE / "iris.csv", base / "input" / "data" / "train" / "iris.csv")
    (base / "input" / "config" / "hyperparameters.json").write_text(json.dumps(JOBS[name]))
    return base


def post(url: str, body: str, accept: str) -> str:
    request = urllib.request.Request(
        url, body.encode(), method="POST", headers={"Content-Type": "text/csv", "Accept": accept}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read().decode()


def serve_and_predict(base: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(
        os.environ,
        SAGEMAKER_BASE_DIR=str(base),
        SAGEMAKER_BIND_TO_PORT=str(port),
        SAGECRAFT_BIND_HOST="127.0.0.1",
    )
    server = subprocess.Popen(["sagecraft", "serve"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if urllib.request.urlopen(f"{url}/ping", timeout=2).status == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        print(f"$ POST {url}/invocations (text/csv)\n{REQUEST}")
        print("-> text/csv:\n" + post(f"{url}/invocations", REQUEST, "text/csv"))
        print("-> application/json: " + post(f"{url}/invocations", REQUEST, "application/json"))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)


def main() -> int:
    for name in JOBS:
        base = tree(name)
        print(f"\n=== {name}: sagecraft train (SAGEMAKER_BASE_DIR={base})", flush=True)
        env = dict(os.environ, SAGEMAKER_BASE_DIR=str(base))
        if subprocess.run(["sagecraft", "train"], env=env, check=False).returncode != 0:
            print((base / "output" / "failure").read_text(), file=sys.stderr)
            return 1
        print(f"\n=== {name}: sagecraft serve", flush=True)
        serve_and_predict(base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
