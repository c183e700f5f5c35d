"""What every sagecraft algorithm must do, checked through the real processes: a plugin's own tests
run it against the plugin.

    from sagecraft.conformance import assert_conforms

    def test_my_algorithm_conforms(tmp_path):
        assert_conforms("my_algo", tmp_path, hyperparameters={"C": 1.0})

Each check lays out a SageMaker tree, runs `sagecraft train` and `sagecraft serve` as SageMaker
would (real processes, real HTTP on 127.0.0.1) and says what to fix when the plugin falls short:

- `text_labels`: classification with text labels; answers are those labels;
- `regression`: numeric labels with `task=regression`; answers follow the labels;
- `missing_values`: empty cells in training and in requests are missing values (NaN): the fit and
  `predict` cope with them (model them, as trees do, or impute from the training data), never
  fail;
- `categorical`: a text feature column; known and unseen categories in requests are answered;
- `outputs`: every output kind is answered or refused as unsupported (400), never a 500;
- `corrupt_model`: a truncated and a garbled model file are refused (`ModelLoadError`) on a
  multi-model endpoint, which keeps serving.

`check(...)` returns every check's result; `assert_conforms(...)` raises one AssertionError listing
the failures.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["CHECKS", "CheckResult", "assert_conforms", "check"]

OUTPUT_KINDS = ("probabilities", "probability", "raw_margin", "contributions", "leaves")


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    message: str  # on failure: what went wrong and what to fix


class _Failed(Exception):
    pass


@dataclass
class _Job:
    """One algorithm's SageMaker tree and the processes run on it."""

    base: Path
    algorithm: str
    hyperparameters: Mapping[str, object]
    command: Sequence[str]
    env: Mapping[str, str]
    trained: dict[str, Path]  # models trained by earlier checks of the same run, by kind

    def environment(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            **self.env,
            "SAGEMAKER_BASE_DIR": str(self.base),
            "PYTHONUNBUFFERED": "1",
            **extra,
        }

    def train(self, files: Mapping[str, str], hyperparameters: Mapping[str, object]) -> None:
        config = self.base / "input" / "config"
        config.mkdir(parents=True, exist_ok=True)
        values = {"algorithm": self.algorithm, **self.hyperparameters, **hyperparameters}
        (config / "hyperparameters.json").write_text(json.dumps({k: str(v) for k, v in values.items()}))
        (config / "inputdataconfig.json").write_text(json.dumps({"train": {"TrainingInputMode": "File"}}))
        for name, text in files.items():
            path = self.base / "input" / "data" / "train" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        result = subprocess.run(
            [*self.command, "train"], env=self.environment(), capture_output=True, text=True, timeout=600
        )
        if result.returncode != 0:
            failure = self.base / "output" / "failure"
            reason = failure.read_text() if failure.exists() else result.stderr[-1500:]
            raise _Failed(f"`sagecraft train` failed: {reason.strip()}")

    @property
    def model_dir(self) -> Path:
        return self.base / "model"

    def classifier(self) -> np.ndarray:
        """A classifier of the three text classes in this job's model/ (trained once a run and
        copied for the checks after), and the rows it was trained on."""
        x = _rows(0, 300)
        if "classifier" in self.trained:
            shutil.copytree(self.trained["classifier"], self.model_dir, dirs_exist_ok=True)
        else:
            self.train({"train.csv": _table(x, list(_classes(x)))}, {"target": "label"})
            self.trained["classifier"] = self.model_dir
        return x


class _Server:
    """A real `sagecraft serve` on 127.0.0.1."""

    def __init__(self, job: _Job, **env: str) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.log = (job.base / f"serve-{self.port}.log").open("w")
        self.process = subprocess.Popen(
            [*job.command, "serve"],
            env=job.environment(
                SAGEMAKER_BIND_TO_PORT=str(self.port), SAGECRAFT_BIND_HOST="127.0.0.1", **env
            ),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.log_path = Path(self.log.name)
        deadline = time.monotonic() + 120
        while self.request("GET", "/ping")[0] != 200:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise _Failed(f"`sagecraft serve` did not start: {self.log_path.read_text()[-1500:]}")
            time.sleep(0.1)

    def request(self, method: str, path: str, body: bytes | None = None, **headers: str) -> tuple[int, str]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body, method=method)
        for name, value in headers.items():
            request.add_header(name.replace("_", "-"), value)
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
        except OSError:
            return 0, ""

    def invoke(self, csv: str, accept: str = "application/json") -> tuple[int, str]:
        return self.request("POST", "/invocations", csv.encode(), Content_Type="text/csv", Accept=accept)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def _rows(seed: int, count: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, 4)).round(4)


def _classes(x: np.ndarray) -> np.ndarray:
    return np.where(x[:, 0] + x[:, 1] > 0.5, "high", np.where(x[:, 0] + x[:, 1] < -0.5, "low", "middle"))


def _table(x: np.ndarray, labels: Sequence[object], blank: np.ndarray | None = None) -> str:
    lines = ["label,a,b,c,d"]
    for i, row in enumerate(x):
        cells = ["" if blank is not None and blank[i, j] else f"{v}" for j, v in enumerate(row)]
        lines.append(",".join([str(labels[i]), *cells]))
    return "\n".join(lines) + "\n"


def _body(x: np.ndarray) -> str:
    return "".join(",".join(f"{v}" for v in row) + "\n" for row in x)


def _predictions(status: int, text: str, what: str) -> list:
    if status != 200:
        raise _Failed(f"{what}: answered {status}: {text[:300]}")
    return list(json.loads(text)["predictions"])


def _text_labels(job: _Job) -> None:
    x = job.classifier()
    labels = _classes(x)
    server = _Server(job)
    try:
        predicted = _predictions(*server.invoke(_body(x[:100])), "a CSV request of 100 rows")
    finally:
        server.stop()
    if not set(map(str, predicted)) <= {"high", "low", "middle"}:
        raise _Failed(
            f"predicted_label answers {sorted(set(map(str, predicted)))[:5]}, not the training labels: "
            "`predict(..., 'label')` must return class codes 0..k-1 (the core maps them to labels)"
        )
    if np.mean(np.array(predicted) == labels[:100]) < 0.6:
        raise _Failed("the training rows are predicted no better than chance: are the class codes in order?")


def _regression(job: _Job) -> None:
    x = _rows(1, 300)
    y = 3 * x[:, 0] - 2 * x[:, 1]
    job.train({"train.csv": _table(x, [f"{v:.4f}" for v in y])}, {"target": "label", "task": "regression"})
    server = _Server(job)
    try:
        predicted = np.array(
            _predictions(*server.invoke(_body(x[:100])), "a CSV request of 100 rows"), dtype=float
        )
    finally:
        server.stop()
    if not np.all(np.isfinite(predicted)) or np.corrcoef(predicted, y[:100])[0, 1] < 0.5:
        raise _Failed(
            "regression answers do not follow the labels: `predict(..., 'label')` returns the values"
        )


def _missing_values(job: _Job) -> None:
    """Empty cells in training and in requests are missing values: the fit gets NaN and must cope
    (model them, as trees do, or impute from the training data); so must `predict`."""
    x = _rows(2, 300)
    labels = _classes(x)
    blank = np.random.default_rng(2).random(x.shape) < 0.1
    job.train({"train.csv": _table(x, list(labels), blank)}, {"target": "label"})
    server = _Server(job)
    try:
        rows = [
            ",".join("" if j == i % 4 else f"{v}" for j, v in enumerate(row)) for i, row in enumerate(x[:40])
        ]
        status, text = server.invoke("\n".join(rows) + "\n")
        if status != 200:
            raise _Failed(
                f"a request with an empty cell in every row was answered {status}: {text[:300]}; "
                "`predict` receives NaN for an empty cell and must answer it as a missing value "
                "(as in training), never fail or read it as 0"
            )
        answered = _predictions(status, text, "a request with empty cells")
    finally:
        server.stop()
    if len(answered) != 40 or not set(map(str, answered)) <= {"high", "low", "middle"}:
        raise _Failed("rows with empty cells were not each answered with a training label")


def _categorical(job: _Job) -> None:
    x = _rows(3, 300)
    colour = np.where(x[:, 2] > 0, "red", "blue")
    labels = np.where((colour == "red") ^ (x[:, 0] > 0), "yes", "no")
    table = "label,colour,a,b\n" + "".join(
        f"{labels[i]},{colour[i]},{x[i, 0]},{x[i, 1]}\n" for i in range(300)
    )
    job.train({"train.csv": table}, {"target": "label"})
    server = _Server(job)
    try:
        body = "red,0.5,0.1\nblue,0.5,0.1\ngreen,0.5,0.1\n,0.5,0.1\n"
        answered = _predictions(*server.invoke(body), "rows with known, unseen and empty categories")
    finally:
        server.stop()
    if len(answered) != 4:
        raise _Failed(f"4 rows got {len(answered)} answers")


def _outputs(job: _Job) -> None:
    x = job.classifier()
    server = _Server(job)
    try:
        for kind in OUTPUT_KINDS:
            status, text = server.invoke(_body(x[:5]), accept=f"application/json; output={kind}")
            if status == 400 and "UnsupportedOutputError" in text:
                continue
            if status != 200:
                raise _Failed(
                    f"output={kind} answered {status}: {text[:300]}; answer it, or raise "
                    "UnsupportedOutputError for an output the model cannot give"
                )
    finally:
        server.stop()


def _corrupt_model(job: _Job) -> None:
    x = job.classifier()
    models = job.base / "models"
    variants = {"good": lambda data: data, "truncated": lambda data: data[: len(data) // 2]}
    variants["garbled"] = lambda data: bytes(b ^ 0x5A if i % 7 == 3 else b for i, b in enumerate(data))
    for name, change in variants.items():
        folder = models / name / "model"
        shutil.copytree(job.model_dir, folder)
        for path in folder.iterdir():
            if path.is_file() and path.name != "manifest.json":
                path.write_bytes(change(path.read_bytes()))
    server = _Server(job, SAGEMAKER_MULTI_MODEL="true")
    try:
        for name in ("truncated", "garbled", "good"):
            body = json.dumps({"model_name": name, "url": str(models / name / "model")}).encode()
            status, text = server.request("POST", "/models", body, Content_Type="application/json")
            if name == "good" and status != 200:
                raise _Failed(
                    f"after two bad model files the endpoint no longer loads a good one: {status} "
                    f"{text[:300]}"
                )
            if name != "good" and status == 0:
                raise _Failed(
                    f"loading a {name} model file killed the endpoint (the process died): "
                    "`load_model` must check the file before a native library parses it, and "
                    "refuse it with ModelLoadError"
                )
            if name != "good" and (status == 200 or "ModelLoadError" not in text):
                raise _Failed(
                    f"a {name} model file was answered {status} {text[:200]}: `load_model` must refuse it "
                    "with ModelLoadError (check lengths and values before your library parses the file)"
                )
        if (
            server.request("POST", "/models/good/invoke", _body(x[:3]).encode(), Content_Type="text/csv")[0]
            != 200
        ):
            raise _Failed("the endpoint stopped serving after the bad model files")
    finally:
        server.stop()


CHECKS: dict[str, Callable[[_Job], None]] = {
    "text_labels": _text_labels,
    "regression": _regression,
    "missing_values": _missing_values,
    "categorical": _categorical,
    "outputs": _outputs,
    "corrupt_model": _corrupt_model,
}


def check(
    algorithm: str,
    work_dir: Path,
    *,
    hyperparameters: Mapping[str, object] | None = None,
    command: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    only: Sequence[str] | None = None,
) -> list[CheckResult]:
    """Run the checks (all, or those named in `only`) on `algorithm`, each in its own folder
    under `work_dir`. `command` is the `sagecraft` to run (default: this environment's)."""
    script = Path(sys.executable).parent / "sagecraft"
    command = list(command or ([str(script)] if script.exists() else [sys.executable, "-m", "sagecraft.cli"]))
    results = []
    trained: dict[str, Path] = {}
    for name in only or list(CHECKS):
        job = _Job(
            Path(work_dir) / name, algorithm, dict(hyperparameters or {}), command, dict(env or {}), trained
        )
        try:
            CHECKS[name](job)
        except _Failed as failure:
            results.append(CheckResult(name, False, str(failure)))
        else:
            results.append(CheckResult(name, True, ""))
    return results


def assert_conforms(algorithm: str, work_dir: Path, **options: object) -> None:
    """`check`, raising one AssertionError that lists every failed check and what to fix."""
    failed = [r for r in check(algorithm, work_dir, **options) if not r.passed]  # type: ignore[arg-type]
    if failed:
        raise AssertionError(
            f"algorithm '{algorithm}' fails {len(failed)} conformance check(s):\n"
            + "\n".join(f"- {r.name}: {r.message}" for r in failed)
        )
