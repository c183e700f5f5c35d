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
  multi-model endpoint, which keeps serving;
- `sigterm`: SIGTERM during `fit` (SageMaker stopping the job) ends it with exit status 0 and a
  model that serves;
- `checkpoints` (for a plugin whose AlgorithmInfo declares `checkpoints`): checkpoints are left
  in the job's checkpoint folder, and a job started again on them resumes;
- `several_hosts` (when it declares `several_hosts`): two hosts on this machine train one model
  (this needs `unshare`, see `sagecraft.local_cluster`).

A check of something the plugin does not declare passes at once.

`check(...)` returns every check's result; `assert_conforms(...)` raises one AssertionError listing
the failures.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .testing import Answer, Endpoint, sagecraft_command, start_endpoint

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
    shared: _SharedEndpoint

    def environment(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            **self.env,
            "SAGEMAKER_BASE_DIR": str(self.base),
            "PYTHONUNBUFFERED": "1",
            **extra,
        }

    def write(self, files: Mapping[str, str], hyperparameters: Mapping[str, object]) -> None:
        """The job's configuration and train channel, as SageMaker lays them out."""
        config = self.base / "input" / "config"
        config.mkdir(parents=True, exist_ok=True)
        values = {"algorithm": self.algorithm, **self.hyperparameters, **hyperparameters}
        (config / "hyperparameters.json").write_text(json.dumps({k: str(v) for k, v in values.items()}))
        (config / "inputdataconfig.json").write_text(json.dumps({"train": {"TrainingInputMode": "File"}}))
        for name, text in files.items():
            path = self.base / "input" / "data" / "train" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

    def start(self) -> subprocess.Popen:
        """`sagecraft train`, started; its stderr (the log) goes to train.log."""
        with (self.base / "train.log").open("wb") as log:
            return subprocess.Popen(
                [*self.command, "train"], env=self.environment(), stdout=subprocess.DEVNULL, stderr=log
            )

    def log(self) -> str:
        path = self.base / "train.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def failure(self) -> str:
        failure = self.base / "output" / "failure"
        return (failure.read_text() if failure.exists() else self.log()[-1500:]).strip()

    def train(self, files: Mapping[str, str], hyperparameters: Mapping[str, object]) -> None:
        self.write(files, hyperparameters)
        process = self.start()
        try:
            returncode = process.wait(600)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise _Failed("`sagecraft train` did not end within 10 minutes") from None
        if returncode != 0:
            raise _Failed(f"`sagecraft train` failed: {self.failure()}")

    def info(self) -> dict[str, Any]:
        """What the plugin declares (AlgorithmInfo), as `sagecraft plugins --json` prints it."""
        result = subprocess.run(
            [*self.command, "plugins", "--json"], env=self.environment(), capture_output=True, text=True
        )
        for entry in json.loads(result.stdout or "[]") if result.returncode == 0 else []:
            if entry["name"] == self.algorithm and entry.get("algorithm"):
                return dict(entry["algorithm"])
        raise _Failed(f"algorithm '{self.algorithm}' is not installed: {result.stderr[-500:]}")

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


class _SharedEndpoint:
    """One multi-model endpoint for the checks of a run that only ask a model questions: each
    loads its model there (a fraction of a second) instead of starting a server of its own (a
    few seconds each). The single-model endpoint is checked by `sigterm` and `several_hosts`."""

    def __init__(self, base: Path, command: Sequence[str], env: Mapping[str, str]) -> None:
        self.base = base
        self.command = command
        self.env = env
        self.endpoint: Endpoint | None = None

    def serve(self, job: _Job, name: str) -> _Served:
        """The job's model/, loaded on the shared endpoint as `name` (started, or restarted
        after a plugin killed it, as needed)."""
        if self.endpoint is None or self.endpoint.process.poll() is not None:
            try:
                self.endpoint = start_endpoint(
                    self.base, multi_model=True, env=self.env, command=self.command
                )
            except RuntimeError as exc:
                raise _Failed(str(exc)) from None
        folder = self.base / "models" / name
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(job.model_dir, folder)
        answer = self.endpoint.load_model(name, folder)
        if answer.status != 200:
            raise _Failed(
                f"the trained model does not load on an endpoint: {answer.status} {answer.text[:300]}"
            )
        return _Served(self.endpoint, name)

    def stop(self) -> None:
        if self.endpoint is not None:
            self.endpoint.stop()


@dataclass(frozen=True)
class _Served:
    """A model loaded on the shared endpoint, asked as an endpoint of its own is."""

    endpoint: Endpoint
    name: str

    def invoke(self, body: str, content_type: str = "text/csv", accept: str = "application/json") -> Answer:
        return self.endpoint.invoke(body, content_type=content_type, accept=accept, model=self.name)

    def stop(self) -> None:
        self.endpoint.unload_model(self.name)


def _serve(job: _Job, multi_model: bool = False) -> Endpoint:
    """A real `sagecraft serve` of the job's model/ (or an empty multi-model endpoint)."""
    try:
        return start_endpoint(job.base, multi_model=multi_model, env=job.env, command=job.command)
    except RuntimeError as exc:
        raise _Failed(str(exc)) from None


def _rows(seed: int, count: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, 4)).round(4)


def _classes(x: np.ndarray) -> np.ndarray:
    return np.where(x[:, 0] + x[:, 1] > 0.5, "high", np.where(x[:, 0] + x[:, 1] < -0.5, "low", "middle"))


def _table(
    x: np.ndarray, labels: Sequence[object], blank: np.ndarray | None = None, header: str = "label,a,b,c,d"
) -> str:
    lines = [header]
    for i, row in enumerate(x):
        cells = ["" if blank is not None and blank[i, j] else f"{v}" for j, v in enumerate(row)]
        lines.append(",".join([str(labels[i]), *cells]))
    return "\n".join(lines) + "\n"


def _body(x: np.ndarray) -> str:
    return "".join(",".join(f"{v}" for v in row) + "\n" for row in x)


def _predictions(answer: Answer, what: str) -> list:
    if answer.status != 200:
        raise _Failed(f"{what}: answered {answer.status}: {answer.text[:300]}")
    return list(answer.json()["predictions"])


def _text_labels(job: _Job) -> None:
    x = job.classifier()
    labels = _classes(x)
    server = job.shared.serve(job, "text_labels")
    try:
        predicted = _predictions(server.invoke(_body(x[:100])), "a CSV request of 100 rows")
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
    server = job.shared.serve(job, "regression")
    try:
        predicted = np.array(
            _predictions(server.invoke(_body(x[:100])), "a CSV request of 100 rows"), dtype=float
        )
    finally:
        server.stop()
    if not np.all(np.isfinite(predicted)) or np.corrcoef(predicted, y[:100])[0, 1] < 0.5:
        raise _Failed(
            "regression answers do not follow the labels: `predict(..., 'label')` returns the values"
        )


def _missing_values(job: _Job) -> None:
    """Empty cells in training and in requests are missing values: the fit gets NaN and must cope
    (model them, as trees do, or impute from the training data); so must `predict`, never fail or
    read them as 0. The data tells reading as 0 apart: `a` is 0 in a quarter of the rows (label
    "low"), between 5 and 10 in half of them and empty in the last quarter (both "high"); a model
    of the missing values and an imputation from the training data (mean 5, median 6) answer
    "high" for an empty `a`, reading it as 0 answers "low"."""
    rng = np.random.default_rng(2)
    count = 400
    kind = rng.permutation(np.repeat([0, 1, 1, 2], count // 4))  # 0: a is 0, 1: 5..10, 2: empty
    a = np.where(kind == 0, 0.0, rng.uniform(5, 10, count).round(3))
    noise = rng.normal(size=(count, 2)).round(4)
    labels = np.where(kind == 0, "low", "high")
    blank = np.zeros((count, 3), dtype=bool)
    blank[:, 0] = kind == 2
    blank[:, 1:] = rng.random((count, 2)) < 0.1
    job.train(
        {"train.csv": _table(np.column_stack([a, noise]), list(labels), blank, "label,a,b,c")},
        {"target": "label"},
    )
    server = job.shared.serve(job, "missing_values")
    try:
        empty_a = "".join(f",{b},{c}\n" for b, c in noise[:20])
        zero_a = "".join(f"0,{b},{c}\n" for b, c in noise[20:40])
        empty_b = "".join(f"7.5,,{c}\n" for _, c in noise[40:60])
        answer = server.invoke(empty_a + zero_a + empty_b)
        if answer.status != 200:
            raise _Failed(
                f"a request with empty cells was answered {answer.status}: {answer.text[:300]}; "
                "`predict` receives NaN for an empty cell and must answer it as a missing value "
                "(as in training), never fail or read it as 0"
            )
        answered = [str(v) for v in _predictions(answer, "a request with empty cells")]
    finally:
        server.stop()
    if len(answered) != 60 or not set(answered) <= {"high", "low"}:
        raise _Failed("rows with empty cells were not each answered with a training label")
    if answered[20:40].count("low") < 16 or answered[40:].count("high") < 16:
        raise _Failed("the model did not learn the training rows (a = 0: low, a = 7.5: high)")
    if answered[:20].count("low") > 4:
        raise _Failed(
            f"{answered[:20].count('low')} of 20 rows with an empty `a` were answered like a = 0 "
            "('low'), though in training an empty `a` meant 'high': an empty cell is a missing value "
            "(NaN), not 0; model it (as trees do) or impute it from the training data, in `fit` "
            "and in `predict` alike"
        )


def _categorical(job: _Job) -> None:
    x = _rows(3, 300)
    colour = np.where(x[:, 2] > 0, "red", "blue")
    labels = np.where((colour == "red") ^ (x[:, 0] > 0), "yes", "no")
    table = "label,colour,a,b\n" + "".join(
        f"{labels[i]},{colour[i]},{x[i, 0]},{x[i, 1]}\n" for i in range(300)
    )
    job.train({"train.csv": table}, {"target": "label"})
    server = job.shared.serve(job, "categorical")
    try:
        body = "red,0.5,0.1\nblue,0.5,0.1\ngreen,0.5,0.1\n,0.5,0.1\n"
        answered = _predictions(server.invoke(body), "rows with known, unseen and empty categories")
    finally:
        server.stop()
    if len(answered) != 4:
        raise _Failed(f"4 rows got {len(answered)} answers")


def _outputs(job: _Job) -> None:
    x = job.classifier()
    server = job.shared.serve(job, "outputs")
    try:
        for kind in OUTPUT_KINDS:
            answer = server.invoke(_body(x[:5]), accept=f"application/json; output={kind}")
            if answer.status == 400 and "UnsupportedOutputError" in answer.text:
                continue
            if answer.status != 200:
                raise _Failed(
                    f"output={kind} answered {answer.status}: {answer.text[:300]}; answer it, or raise "
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
    server = _serve(job, multi_model=True)
    try:
        for name in ("truncated", "garbled", "good"):
            answer = server.load_model(name, models / name / "model")
            status, text = answer.status, answer.text
            if name == "good" and status != 200:
                raise _Failed(
                    f"after two bad model files the endpoint no longer loads a good one: {status} "
                    f"{text[:300]}"
                )
            if name != "good" and (status == 0 or "ModelCrashedError" in text):
                # A multi-model endpoint survives it (the model's own processes die), a
                # single-model one does not: the plugin must refuse the file itself.
                raise _Failed(
                    f"loading a {name} model file killed the process that loaded it "
                    f"({text[:200] or 'the endpoint died'}): `load_model` must check the file "
                    "before a native library parses it, and refuse it with ModelLoadError"
                )
            if name != "good" and (status == 200 or "ModelLoadError" not in text):
                raise _Failed(
                    f"a {name} model file was answered {status} {text[:200]}: `load_model` must refuse it "
                    "with ModelLoadError (check lengths and values before your library parses the file)"
                )
        if server.invoke(_body(x[:3]), model="good").status != 200:
            raise _Failed("the endpoint stopped serving after the bad model files")
    finally:
        server.stop()


def _sigterm(job: _Job) -> None:
    """SageMaker stops a job with SIGTERM, then SIGKILL 120 s later: during `fit`, the job ends
    with exit status 0 and a model that serves (the fit stopped early at `stop_requested()`, or
    finished)."""
    x = _rows(5, 4000)
    job.write({"train.csv": _table(x, list(_classes(x)))}, {"target": "label"})
    process = job.start()
    try:
        deadline = time.monotonic() + 120
        while "fitting " not in job.log() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        returncode = process.wait(120)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise _Failed(
            "the job did not end within 120 s of SIGTERM (SageMaker kills it then, and the model "
            "is lost): end `fit` at the next iteration once `context.stop_requested()` says True"
        ) from None
    if returncode != 0:
        raise _Failed(
            f"after SIGTERM during fit the job exited {returncode}: {job.failure()[:300]}; return "
            "the model so far from `fit` when `context.stop_requested()` says True"
        )
    server = _serve(job)
    try:
        _predictions(server.invoke(_body(x[:10])), "the model saved after SIGTERM")
    finally:
        server.stop()


def _checkpoints(job: _Job) -> None:
    """For a plugin that declares `checkpoints`: a job with a checkpoint configuration leaves
    checkpoints in the folder, and a job started again on them resumes (says so in its log, as
    `sagecraft.checkpoints.CheckpointFolder.resume` does) and ends with a model."""
    if not job.info().get("checkpoints"):
        return
    x = _rows(6, 600)
    folder = job.base / "checkpoints"
    config = job.base / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "checkpointconfig.json").write_text(json.dumps({"LocalPath": str(folder)}))
    job.train({"train.csv": _table(x, list(_classes(x)))}, {"target": "label"})
    saved = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    if not saved:
        raise _Failed(
            f"the plugin declares checkpoints, but the job left none in {folder}: write them to "
            "`context.checkpoint_dir` (sagecraft.checkpoints.CheckpointFolder does it safely)"
        )
    job.train({"train.csv": _table(x, list(_classes(x)))}, {"target": "label"})
    if "resum" not in job.log().lower():
        raise _Failed(
            f"a job started on the checkpoints {saved[-3:]} did not say that it resumed: resume from "
            "the newest one that loads, and log it (CheckpointFolder.resume does both)"
        )


def _several_hosts(job: _Job) -> None:
    """For a plugin that declares `several_hosts`: two hosts (on one machine, in private network
    namespaces: `sagecraft.local_cluster`) train one model, every host exits 0, the first host
    saves it and it serves."""
    if not job.info().get("several_hosts"):
        return
    from .local_cluster import LocalCluster

    x = _rows(7, 600)
    bases = [job.base / f"algo-{i}" for i in (1, 2)]
    for index, base in enumerate(bases):
        host = _Job(base, job.algorithm, job.hyperparameters, job.command, job.env, {}, job.shared)
        host.write({"train.csv": _table(x[index::2], list(_classes(x[index::2])))}, {"target": "label"})
        (base / "input" / "config" / "inputdataconfig.json").write_text(
            json.dumps({"train": {"TrainingInputMode": "File", "S3DistributionType": "ShardedByS3Key"}})
        )
    if not LocalCluster.available():
        raise _Failed("two hosts cannot be started on this machine: `unshare --map-root-user --net` fails")
    results = LocalCluster(bases).start(env=job.env, command=[*job.command, "train"]).wait(300)
    for result in results:
        if result.returncode != 0:
            reason = result.failure or result.stderr[-800:]
            raise _Failed(f"on two hosts, {result.name} exited {result.returncode}: {reason.strip()[:400]}")
    leader = _Job(bases[0], job.algorithm, job.hyperparameters, job.command, job.env, {}, job.shared)
    server = _serve(leader)
    try:
        _predictions(server.invoke(_body(x[:10])), "the model two hosts trained")
    finally:
        server.stop()


CHECKS: dict[str, Callable[[_Job], None]] = {
    "text_labels": _text_labels,
    "regression": _regression,
    "missing_values": _missing_values,
    "categorical": _categorical,
    "outputs": _outputs,
    "corrupt_model": _corrupt_model,
    "sigterm": _sigterm,
    "checkpoints": _checkpoints,
    "several_hosts": _several_hosts,
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
    command = list(command or sagecraft_command())
    results = []
    trained: dict[str, Path] = {}
    shared = _SharedEndpoint(Path(work_dir) / "endpoint", command, dict(env or {}))
    try:
        for name in only or list(CHECKS):
            job = _Job(
                Path(work_dir) / name,
                algorithm,
                dict(hyperparameters or {}),
                command,
                dict(env or {}),
                trained,
                shared,
            )
            try:
                CHECKS[name](job)
            except _Failed as failure:
                results.append(CheckResult(name, False, str(failure)))
            else:
                results.append(CheckResult(name, True, ""))
    finally:
        shared.stop()
    return results


def assert_conforms(algorithm: str, work_dir: Path, **options: object) -> None:
    """`check`, raising one AssertionError that lists every failed check and what to fix."""
    failed = [r for r in check(algorithm, work_dir, **options) if not r.passed]  # type: ignore[arg-type]
    if failed:
        raise AssertionError(
            f"algorithm '{algorithm}' fails {len(failed)} conformance check(s):\n"
            + "\n".join(f"- {r.name}: {r.message}" for r in failed)
        )
