"""Configuration as an attacker (or a broken tool) writes it: input/config files of the wrong
shape, hyperparameter names with control characters, multi-model names that no URL can reach.
Each is refused with a typed error naming the file or the name; never 'internal error'."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sagemaker_tree import Server, TrainingTree, iris_tree, place_model

pytestmark = pytest.mark.hardening

SETOSA = "5.0,3.4,1.5,0.2"


@pytest.mark.parametrize(
    ("file", "content", "phrase"),
    [
        ("hyperparameters.json", [1, 2], "hyperparameters.json must hold a JSON object"),
        ("hyperparameters.json", '"text"', "hyperparameters.json must hold a JSON object"),
        ("inputdataconfig.json", ["train"], "inputdataconfig.json must hold a JSON object"),
        ("inputdataconfig.json", {"train": "text/csv"}, "channel 'train' must be a JSON object"),
        (
            "inputdataconfig.json",
            {"train": {"ContentType": 5}},
            "channel 'train': ContentType must be a string",
        ),
        (
            "inputdataconfig.json",
            {"train": {"TrainingInputMode": "Carrier pigeon"}},
            "channel 'train': TrainingInputMode must be File, FastFile or Pipe",
        ),
        (
            "inputdataconfig.json",
            {"train": {"S3DistributionType": ["x"]}},
            "channel 'train': S3DistributionType must be FullyReplicated or ShardedByS3Key",
        ),
        (
            "resourceconfig.json",
            {"current_host": "algo-1", "hosts": "algo-1"},
            "resourceconfig.json: hosts must be a list of host names",
        ),
        (
            "resourceconfig.json",
            {"current_host": "algo-9", "hosts": ["algo-1", "algo-2"]},
            "resourceconfig.json: current_host 'algo-9' is not among the hosts",
        ),
        (
            "resourceconfig.json",
            {"current_host": "algo-1", "hosts": ["algo-1", "algo-1"]},
            "resourceconfig.json: hosts must be a list of host names, each once",
        ),
        ("resourceconfig.json", 7, "resourceconfig.json must hold a JSON object"),
        ("checkpointconfig.json", {"LocalPath": 42}, "checkpointconfig.json: LocalPath must be a string"),
        ("checkpointconfig.json", [], "checkpointconfig.json must hold a JSON object"),
    ],
)
def test_malformed_configuration_files_fail_naming_the_file(
    tmp_path: Path, file: str, content: object, phrase: str
) -> None:
    tree = iris_tree(tmp_path, {"algorithm": "random_forest", "target": "Species"})
    raw = content if isinstance(content, str) else json.dumps(content)
    (tmp_path / "input" / "config" / file).write_text(raw)
    assert tree.train().returncode == 1, tree.explain()
    assert tree.failure is not None, tree.explain()
    assert phrase in tree.failure.split("\n")[0], tree.failure
    assert "Error type: ConfigurationError" in tree.failure, tree.failure
    assert "internal error" not in tree.failure


@pytest.mark.parametrize("name", ["tar\x00get", "max\ndepth", "n\tround", "\x1b[31mred", "x" * 257])
def test_hyperparameter_names_with_control_characters_or_of_any_length_are_refused(
    tmp_path: Path, name: str
) -> None:
    tree = iris_tree(tmp_path, {"algorithm": "random_forest", "target": "Species", name: "1"})
    assert tree.train().returncode == 1, tree.explain()
    assert tree.failure is not None
    first = tree.failure.split("\n")[0]
    assert "hyperparameter name" in first and "Error type: HyperparameterError" in tree.failure
    assert "\x00" not in first and "\x1b" not in first  # quoted, never echoed raw


# --- multi-model names ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory, iris_forest: TrainingTree) -> tuple[Server, str]:
    """One endpoint for every name below: each test leaves it with no model loaded."""
    base = tmp_path_factory.mktemp("names")
    url = place_model(base, "source", iris_forest.model_dir)
    server = Server(base, SAGEMAKER_MULTI_MODEL="true").wait_ready()
    yield server, url
    server.stop()


@pytest.mark.parametrize(
    "name", ["", "x" * 1025, "a\x00b", "a\nb", "tab\there", "\x1b[31m", "\ud800", "\U0001f600" * 700]
)
def test_model_names_no_url_could_reach_are_refused_at_load(endpoint: tuple[Server, str], name: str) -> None:
    server, url = endpoint
    response = server.session.post(f"{server.url}/models", json={"model_name": name, "url": url})
    assert response.status_code == 400, (name, response.text)
    assert response.json()["type"] == "BadRequestError" and "model_name" in response.json()["message"]
    assert server.session.get(f"{server.url}/models").json() == {"models": []}


@pytest.mark.parametrize(
    "name",
    [
        "iris",
        "a/b/model.tar.gz",
        "modèle-1.0",
        "x" * 1024,
        "name with spaces",
        "a+b=c@d:e",
        "a?b#c%d",
        "../x",
        "a//b/",
        "\U0001f600" * 600,
    ],
)
def test_every_model_name_accepted_can_be_invoked_described_and_deleted(
    endpoint: tuple[Server, str], name: str
) -> None:
    server, url = endpoint
    loaded = server.session.post(f"{server.url}/models", json={"model_name": name, "url": url})
    assert loaded.status_code == 200, loaded.text
    from urllib.parse import quote

    path = f"{server.url}/models/{quote(name, safe='')}"
    invoked = server.session.post(f"{path}/invoke", data=SETOSA, headers={"Content-Type": "text/csv"})
    assert (invoked.status_code, invoked.text) == (200, "setosa\n"), invoked.text
    assert server.session.get(path).json()["modelName"] == name
    assert server.session.delete(path).status_code == 200
    assert server.session.get(f"{server.url}/models").json() == {"models": []}


@pytest.mark.parametrize(
    "file", ["hyperparameters.json", "inputdataconfig.json", "resourceconfig.json", "checkpointconfig.json"]
)
def test_a_fifo_as_a_configuration_file_fails_at_once_naming_it(tmp_path: Path, file: str) -> None:
    tree = iris_tree(tmp_path, {"algorithm": "random_forest", "target": "Species"})
    path = tmp_path / "input" / "config" / file
    path.unlink(missing_ok=True)
    os.mkfifo(path)  # opened for reading, it would block the job until someone writes
    assert tree.train(timeout=60).returncode == 1, tree.explain()
    assert tree.failure is not None and f"{file} is a FIFO, not a regular file" in tree.failure
    assert "Error type: ConfigurationError" in tree.failure
