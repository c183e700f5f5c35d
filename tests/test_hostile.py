"""Hostile artefacts: model folders, request bodies and hyperparameters written to run code or to
reach files they should not. Each test plants a payload that would leave a marker file if it ever
ran, and checks that the marker is absent and the input refused (or ignored) with a clear error."""

from __future__ import annotations

import io
import os
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import skops.io

from sagemaker_tree import REPO, Server, TrainingTree, iris_tree, place_model

pytestmark = pytest.mark.hardening

SETOSA = "5.0,3.4,1.5,0.2"


class _Payload:
    """Unpickling this writes the marker file: proof that a pickle was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.write_text, (str(self.marker), "pwned"))  # type: ignore[return-value]


def _pickle(marker: Path) -> bytes:
    return pickle.dumps(_Payload(marker))


def test_the_code_never_loads_pickle_joblib_or_evaluates_text() -> None:
    """No code path in the core or the plugins can unpickle or evaluate: checked in the source."""
    forbidden = re.compile(
        r"\bimport (pickle|joblib|dill|cloudpickle)\b|\bfrom (pickle|joblib)\b|\bpickle\.loads?\("
        r"|\bjoblib\.load\(|\beval\(|\bexec\(|allow_pickle=True|\byaml\.load\(|\btorch\.load\("
    )
    offenders = []
    for folder in ("platform", "plugins"):
        for path in (REPO / folder).rglob("*.py"):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if forbidden.search(code):
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
                if "np.load(" in code and "allow_pickle=False" not in code:
                    offenders.append(f"{path.relative_to(REPO)}:{number}: np.load without allow_pickle=False")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("algorithm", ["random_forest", "xgboost"])
def test_pickle_files_planted_in_a_model_folder_are_never_loaded(
    tmp_path: Path, iris_forest: TrainingTree, iris_xgboost: TrainingTree, algorithm: str
) -> None:
    source = iris_forest.model_dir if algorithm == "random_forest" else iris_xgboost.model_dir
    shutil.copytree(source, tmp_path / "model")
    marker = tmp_path / "marker"
    for name in (
        "model.pkl",
        "model.joblib",
        "model.pickle",
        "xgboost-model",
        "model.bst",
        "model.sav",
        "model.joblib.gz",
    ):
        (tmp_path / "model" / name).write_bytes(_pickle(marker))
    server = Server(tmp_path).wait_ready()
    try:
        assert server.invoke(SETOSA).text == "setosa\n"
    finally:
        server.stop()
    assert not marker.exists()


def test_a_skops_file_with_code_references_is_refused(tmp_path: Path, iris_forest: TrainingTree) -> None:
    shutil.copytree(iris_forest.model_dir, tmp_path / "model")
    marker = tmp_path / "marker"
    # A skops archive whose objects reference functions that could run commands when called.
    skops.io.dump(
        {"estimators_": [os.system, shutil.rmtree], "marker": str(marker)}, tmp_path / "model" / "model.skops"
    )
    server = Server(tmp_path)
    try:
        assert server.process.wait(60) == 1
        log = server.log()
        assert "holds types that are not part of a random forest" in log, log
        assert "posix.system" in log and "shutil.rmtree" in log
    finally:
        server.stop()
    assert not marker.exists()


def test_a_pickled_npy_body_is_refused_without_being_unpickled(forest_server: Server, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    buffer = io.BytesIO()
    np.save(buffer, np.array([_Payload(marker), 1.0], dtype=object), allow_pickle=True)
    response = forest_server.invoke(buffer.getvalue(), "application/x-npy")
    assert response.status_code == 400
    assert "without objects" in response.json()["message"]
    assert not marker.exists()
    assert forest_server.invoke(SETOSA).text == "setosa\n"


@pytest.mark.parametrize(
    ("name", "value", "phrase"),
    [
        ("max_depth", "__import__('pathlib').Path('{marker}').write_text('x')", "max_depth"),
        ("num_round", "{{'a': __import__('os').system('touch {marker}')}}", "num_round"),
        ("eval_metric", "__import__('pathlib').Path('{marker}').write_text('x')", "Unknown metric"),
        ("objective", "lambda: open('{marker}', 'w')", "objective"),
        ("target", "__import__('pathlib').Path('{marker}').write_text('x')", "target column"),
    ],
)
def test_hyperparameters_are_never_evaluated_as_code(
    tmp_path: Path, name: str, value: str, phrase: str
) -> None:
    marker = tmp_path / "marker"
    hyperparameters = {"algorithm": "xgboost", "target": "Species", "num_round": 2}
    hyperparameters[name] = value.format(marker=marker)
    tree = iris_tree(tmp_path / "job", hyperparameters)
    result = tree.train()
    assert result.returncode == 1, tree.explain()
    assert tree.failure is not None and phrase in tree.failure.split("\n")[0], tree.failure
    assert not marker.exists()


# --- a multi-model endpoint's urls stay inside /opt/ml/models -----------------------------------


@pytest.fixture
def escape_endpoint(tmp_path: Path, iris_forest: TrainingTree) -> tuple[Server, Path, Path]:
    """An endpoint whose models folder is `tmp_path/models`, and a trained model outside it."""
    outside = tmp_path / "outside" / "model"
    shutil.copytree(iris_forest.model_dir, outside)
    place_model(tmp_path, "good", iris_forest.model_dir)
    server = Server(tmp_path, SAGEMAKER_MULTI_MODEL="true").wait_ready()
    yield server, tmp_path / "models", outside
    server.stop()


def _load(server: Server, name: str, url: str) -> dict[str, object]:
    response = server.session.post(f"{server.url}/models", json={"model_name": name, "url": url})
    assert response.status_code == 400, response.text
    return response.json()


def test_urls_outside_the_models_folder_are_refused(escape_endpoint: tuple[Server, Path, Path]) -> None:
    server, models, outside = escape_endpoint
    for url in (
        str(outside),
        f"{models}/../outside/model",
        f"{models}/good/../../outside/model",
        "/etc",
        "/",
        str(models),
    ):
        assert "outside the models folder" in _load(server, "x", url)["message"], url
    assert server.session.get(f"{server.url}/models").json() == {"models": []}


def test_symbolic_links_out_of_the_models_folder_are_refused(
    escape_endpoint: tuple[Server, Path, Path],
) -> None:
    server, models, outside = escape_endpoint
    (models / "linked").symlink_to(outside.parent)  # a model folder that is a link outside
    assert "outside the models folder" in _load(server, "a", str(models / "linked" / "model"))["message"]
    # A real folder whose model file links to another model's file outside.
    inner = models / "inner" / "model"
    shutil.copytree(models / "good" / "model", inner)
    (inner / "model.skops").unlink()
    (inner / "model.skops").symlink_to(outside / "model.skops")
    assert "links to" in _load(server, "b", str(inner))["message"]
    # A link loop.
    (models / "loop").symlink_to(models / "loop")
    assert _load(server, "c", str(models / "loop"))["code"] == 400
    good = server.session.post(
        f"{server.url}/models", json={"model_name": "good", "url": str(models / "good" / "model")}
    )
    assert good.status_code == 200
    assert [m["modelName"] for m in server.session.get(f"{server.url}/models").json()["models"]] == ["good"]


def test_the_image_carries_no_build_tools_or_caches() -> None:
    """What the Dockerfile installs and leaves behind; ../shared/tools/image-smoke builds it."""
    dockerfile = (REPO / "Dockerfile").read_text()
    assert not re.search(r"apt-get install|apk add|build-essential|gcc|g\+\+|\bmake\b", dockerfile)
    assert "PIP_NO_CACHE_DIR=1" in dockerfile
    assert "rm -rf /tmp/sagecraft" in dockerfile and "/root/.cache" in dockerfile
    assert re.search(r'^ENTRYPOINT \["sagecraft"\]$', dockerfile, re.MULTILINE)
