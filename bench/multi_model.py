"""Multi-model endpoint benchmark: its throughput against a single-model endpoint on the same model
and cores, against MLServer's serving of the same models, with 1 and 2 workers; memory per loaded
model and load latency.

    python3 bench/multi_model.py            # about 6 minutes on 2 cores; writes bench/MULTI_MODEL.md
    python3 bench/multi_model.py --quick    # one short round

Uses bench/serving.py's setup (wrk, the models trained with the real `sagecraft train`, the request
bodies, MLServer 1.7 in its own virtual environment, tuned as benchmark-notes.md says). Servers
alternate run by run and the table quotes medians of the rounds; ratios are taken within a run.
The multi-model endpoint holds both models (XGBoost and the forest) and is asked for XGBoost.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import serving  # bench/serving.py (this script's folder is on sys.path)
from serving import WORK, Result, Server, fix_port, sagecraft_server, wrk

HERE = Path(__file__).resolve().parent
MODELS = ("xgboost", "forest")
ENDPOINTS = ("single-model", "multi-model")


def _call(port: int, method: str, path: str, body: object = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    data = json.dumps(body) if body is not None else None
    connection.request(method, path, data, {"Content-Type": "application/json"} if data else {})
    response = connection.getresponse()
    return response.status, response.read()


def _load(port: int, name: str, url: Path) -> float:
    started = time.perf_counter()
    status, text = _call(port, "POST", "/models", {"model_name": name, "url": str(url)})
    assert status == 200, text
    return time.perf_counter() - started


def _multi_model(workers: int, models: dict[str, Path]) -> tuple[Server, dict[str, object]]:
    base = WORK / f"mme-{workers}"
    shutil.rmtree(base, ignore_errors=True)
    for name, tree in models.items():
        shutil.copytree(tree / "model", base / "models" / name / "model")
    server = fix_port(
        sagecraft_server(
            f"mme {workers}", base, SAGEMAKER_MULTI_MODEL="true", SAGEMAKER_MODEL_SERVER_WORKERS=str(workers)
        )
    ).start()
    facts: dict[str, object] = {"empty MiB": server.memory("Pss") >> 20}
    for name in models:
        _load(server.port, name, base / "models" / name / "model")
        described = json.loads(_call(server.port, "GET", f"/models/{name}")[1])
        facts[f"{name} MiB"] = described["memoryBytes"] >> 20
    facts["loaded MiB"] = server.memory("Pss") >> 20
    # Load latency: the small XGBoost model loaded and unloaded again under other names.
    latencies = []
    for index in range(5):
        latencies.append(_load(server.port, f"again-{index}", base / "models" / "xgboost" / "model"))
        _call(server.port, "DELETE", f"/models/again-{index}")
    facts["load ms"] = statistics.median(latencies) * 1000
    server.path = "/models/xgboost/invoke"
    return server, facts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "MULTI_MODEL.md")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.rounds = 2.0, 1
    serving.ensure_tools()
    models = {name: serving.ensure_model(name) for name in MODELS}
    train_csv, x = WORK / "train.csv", serving.training_data()[1]
    if not train_csv.exists():
        train_csv.write_text(serving.training_data()[0])
    bodies = serving.write_bodies(x)
    results: dict[tuple[str, int, int], list[Result]] = {}
    facts: dict[int, dict[str, object]] = {}
    mlserver_venv = serving.ensure_mlserver()
    for workers in (1, 2):
        single = fix_port(
            sagecraft_server("sme", models["xgboost"], SAGEMAKER_MODEL_SERVER_WORKERS=str(workers))
        ).start()
        multi, facts[workers] = _multi_model(workers, models)
        order: list[tuple[str, Server]] = [("single-model", single), ("multi-model", multi)]
        mlserver = None
        if mlserver_venv is not None and workers == 2:
            port = serving.free_port()
            folder = serving.mlserver_folder(mlserver_venv, train_csv, port, tuned=True)
            mlserver = Server(
                "mlserver",
                [str(mlserver_venv / "bin" / "mlserver"), "start", str(folder)],
                {"OMP_NUM_THREADS": "1"},
                port=port,
                health="/v2/health/ready",
            ).start()
            order.append(("mlserver", mlserver))
        try:
            for round_index in range(args.rounds):
                for rows in (1, 100):
                    for label, server in order if round_index % 2 == 0 else order[::-1]:
                        body, url, content_type = bodies[("csv", rows)], server.url, "text/csv"
                        if label == "mlserver":
                            body, content_type = bodies[("v2", rows)], "application/json"
                            url = f"http://127.0.0.1:{server.port}/v2/models/xgboost/infer"
                        result = wrk(url, body, content_type, args.duration, args.connections)
                        results.setdefault((label, workers, rows), []).append(result)
                        print(f"{workers} workers, {rows} rows, {label}: {result.rps:.0f} req/s", flush=True)
        finally:
            for server in (single, multi, mlserver):
                if server is not None:
                    server.stop()
    lines = report(results, facts, args)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _rps(results: dict, key: tuple[str, int, int]) -> float:
    runs = results.get(key)
    return statistics.median(r.rps for r in runs) if runs else float("nan")


def report(results: dict, facts: dict, args: argparse.Namespace) -> list[str]:
    lines = [
        "# Multi-model endpoint benchmark",
        "",
        f"Run on {time.strftime('%Y-%m-%d')} with `python3 bench/multi_model.py`: {serving.CORES} cores, "
        f"wrk with {args.connections} keep-alive connections, {args.duration:g} s per run, "
        f"{args.rounds} round(s) alternating the servers; medians. The multi-model endpoint holds "
        "XGBoost and the forest and is asked for XGBoost (`/models/xgboost/invoke`); the "
        "single-model endpoint serves the same XGBoost model. MLServer (tuned, 1 worker as "
        "installed) serves both models from one folder and is asked for XGBoost (V2 JSON).",
        "",
        "| workers | rows | single-model req/s | multi-model req/s | multi / single | MLServer req/s "
        "| multi / MLServer |",
        "|---|---|---|---|---|---|---|",
    ]
    for workers in (1, 2):
        for rows in (1, 100):
            single = _rps(results, ("single-model", workers, rows))
            multi = _rps(results, ("multi-model", workers, rows))
            ml = _rps(results, ("mlserver", workers, rows))
            ml_text = f"{ml:.0f} | {multi / ml:.1f}x" if ml == ml else "- | -"
            lines.append(
                f"| {workers} | {rows} | {single:.0f} | {multi:.0f} | {multi / single:.2f} | {ml_text} |"
            )
    lines += ["", "| scaling, 2 workers / 1 | single-model | multi-model |", "|---|---|---|"]
    for rows in (1, 100):
        scaled = [_rps(results, (kind, 2, rows)) / _rps(results, (kind, 1, rows)) for kind in ENDPOINTS]
        lines.append(f"| {rows} row(s) | {scaled[0]:.2f} | {scaled[1]:.2f} |")
    lines += [
        "",
        "| workers | endpoint, empty | with both models | XGBoost's process | forest's process "
        "| load, median of 5 |",
        "|---|---|---|---|---|---|",
    ]
    for workers, fact in facts.items():
        lines.append(
            f"| {workers} | {fact['empty MiB']} MiB | {fact['loaded MiB']} MiB | {fact['xgboost MiB']} MiB "
            f"| {fact['forest MiB']} MiB | {fact['load ms']:.0f} ms |"
        )
    lines += [
        "",
        "Memory is the proportional set size (PSS) over every process of the endpoint; a model's is "
        "its process's PSS (the model, plus its share of the libraries it shares with the others).",
    ]
    return lines


if __name__ == "__main__":
    sys.exit(main())
