"""Model files as an attacker writes them: crafted trees, special files, manifests that lie, and
thousands of random mutations of real saved models (800 of each of four). None may crash or hang
a process; each is refused with ModelLoadError naming the file (and the tree and node), or loads
and predicts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io
import ubjson

from sagecraft_xgboost.model_file import read_document
from sagemaker_tree import REPO, Server, TrainingTree, install_test_plugin, iris_tree, place_model

pytestmark = pytest.mark.hardening

SETOSA = "5.0,3.4,1.5,0.2"
FUZZ_MUTATIONS = int(os.environ.get("SAGECRAFT_FUZZ_MUTATIONS", "800"))


@pytest.fixture(scope="module")
def small_iris_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small iris models (a few trees each), so that the fuzzer's thousands of loads stay quick."""
    models = {}
    for algorithm, extra in (
        ("xgboost", {"num_round": 4, "max_depth": 3}),
        ("random_forest", {"ntree": 6, "max_depth": 4}),
    ):
        tree = iris_tree(
            tmp_path_factory.mktemp(f"small-{algorithm}"),
            {"algorithm": algorithm, "target": "Species", **extra},
        )
        assert tree.train().returncode == 0, tree.explain()
        models[algorithm] = tree.model_dir
    return models


@pytest.fixture(scope="module")
def categorical_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An XGBoost model and a forest trained on a text column (categorical splits, category
    encoders in the files) and a number."""
    rng = np.random.default_rng(0)
    colours = rng.choice(list("abcde"), 300)
    numbers = rng.normal(size=300)
    rows = ["y,colour,x"] + [
        f"{(c in 'ab') ^ (x > 0):d},{c},{x:.3f}" for c, x in zip(colours, numbers, strict=True)
    ]
    models = {}
    for algorithm, extra in (
        ("xgboost", {"num_round": 6, "max_cat_to_onehot": 1}),
        ("random_forest", {"ntree": 6}),
    ):
        tree = TrainingTree(tmp_path_factory.mktemp(f"categorical-{algorithm}"))
        tree.add_file("train", "d.csv", "\n".join(rows) + "\n")
        tree.channels(train="text/csv")
        tree.hyperparameters({"algorithm": algorithm, "target": "y", **extra})
        assert tree.train().returncode == 0, tree.explain()
        models[algorithm] = tree.model_dir
    return models


def _serve_refuses(base: Path, *phrases: str, **env: str) -> None:
    """`sagecraft serve` of the model under `base` exits 1, its log naming every phrase."""
    server = Server(base, SAGEMAKER_MODEL_SERVER_WORKERS="1", **env)
    try:
        assert server.process.wait(60) == 1, server.log()
        log = server.log()
        assert all(phrase in log for phrase in phrases), log
        assert "Traceback" not in log, log
    finally:
        server.stop()


# --- the fuzzer --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "model", ["forest", "xgboost", "categorical forest", "categorical xgboost", "binary xgboost"]
)
def test_thousands_of_mutated_model_files_load_or_are_refused_and_never_crash(
    tmp_path: Path,
    small_iris_models: dict[str, Path],
    categorical_models: dict[str, Path],
    request: pytest.FixtureRequest,
    model: str,
) -> None:
    if model == "binary xgboost":  # a built-in algorithm's folder: XGBoost 1's format, no manifest
        folder = tmp_path / "builtin"
        folder.mkdir()
        written = request.getfixturevalue("binary_models") / "softprob" / "xgboost-model"
        shutil.copy(written, folder / "xgboost-model")
    else:
        folder = {
            "forest": small_iris_models["random_forest"],
            "xgboost": small_iris_models["xgboost"],
            "categorical forest": categorical_models["random_forest"],
            "categorical xgboost": categorical_models["xgboost"],
        }[model]
    progress = tmp_path / "progress"
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "tests" / "model_fuzz.py"),
            str(folder),
            str(FUZZ_MUTATIONS),
            str(sum(map(ord, model))),
            str(progress),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO / "tests")},
    )
    # A negative status is the signal that killed it; the progress file names the mutation.
    assert run.returncode == 0, f"exit {run.returncode} at {progress.read_text()}{run.stderr[-2000:]}"
    result = json.loads(run.stdout)
    assert result["faults"] == [], "\n".join(result["faults"][:20])
    # Both outcomes happen: the mutations reach the checks, and spare what is still a model.
    assert result["loaded"] > FUZZ_MUTATIONS // 20 and result["refused"] > FUZZ_MUTATIONS // 4, result


# --- crafted XGBoost files ---------------------------------------------------------------------


def _tree(document: dict[str, Any], index: int = 0) -> dict[str, Any]:
    return document["learner"]["gradient_booster"]["model"]["trees"][index]


def _first_split_child(document: dict[str, Any]) -> None:
    _tree(document)["left_children"][0] = 100_000


def _cycle(document: dict[str, Any]) -> None:
    tree = _tree(document)
    split = int(np.flatnonzero(tree["left_children"] != -1)[-1])
    tree["left_children"][split] = 0  # back to the root


def _shared_subtree(document: dict[str, Any]) -> None:
    tree = _tree(document)
    tree["right_children"][0] = tree["left_children"][0]


def _feature_out_of_range(document: dict[str, Any]) -> None:
    _tree(document)["split_indices"][0] = 1_000_000


def _leaf_not_a_number(document: dict[str, Any]) -> None:
    tree = _tree(document)
    leaf = int(np.flatnonzero(tree["left_children"] == -1)[0])
    tree["split_conditions"][leaf] = np.nan


def _negative_leaf_vector(document: dict[str, Any]) -> None:  # crashed XGBoost's own loader
    _tree(document)["tree_param"]["size_leaf_vector"] = "-1"


def _duplicate_tree_id(document: dict[str, Any]) -> None:
    _tree(document, 1)["id"] = 0


def _wrong_parent(document: dict[str, Any]) -> None:
    tree = _tree(document)
    tree["parents"][tree["left_children"][0]] = 2**31 - 1


CRAFTED = {
    "child out of range": (_first_split_child, "tree 0: node 0 has a child"),
    "cycle": (_cycle, "tree 0: node"),
    "shared subtree": (_shared_subtree, "tree 0: node 0 is its own child or has one child twice"),
    "feature out of range": (_feature_out_of_range, "tree 0: node 0 splits on a feature outside"),
    "leaf NaN": (_leaf_not_a_number, "tree 0, split_conditions: node"),
    "negative leaf vector": (_negative_leaf_vector, "size_leaf_vector is negative"),
    "duplicate tree id": (_duplicate_tree_id, "trees are not numbered"),
    "wrong parent": (_wrong_parent, "tree 0: its parent links do not match"),
}


def _craft(model_dir: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    path = model_dir / "xgboost-model.ubj"
    document = read_document(path.read_bytes())
    edit(document)
    path.write_bytes(ubjson.dumps(document))


def test_crafted_xgboost_files_stop_serve_with_the_tree_and_node(
    tmp_path: Path, iris_xgboost: TrainingTree
) -> None:
    for name, (edit, phrase) in CRAFTED.items():
        base = tmp_path / name.replace(" ", "-")
        shutil.copytree(iris_xgboost.model_dir, base / "model")
        _craft(base / "model", edit)
        _serve_refuses(base, phrase, "xgboost-model.ubj")


def test_crafted_xgboost_files_fail_only_their_own_load_on_a_multi_model_endpoint(
    tmp_path: Path, iris_xgboost: TrainingTree
) -> None:
    good = place_model(tmp_path, "good", iris_xgboost.model_dir)
    crafted = {}
    for name, (edit, phrase) in CRAFTED.items():
        url = place_model(tmp_path, name.replace(" ", "-"), iris_xgboost.model_dir)
        _craft(Path(url), edit)
        crafted[name.replace(" ", "-")] = (url, phrase)
    server = Server(tmp_path, SAGEMAKER_MULTI_MODEL="true").wait_ready()
    try:
        for name, (url, phrase) in crafted.items():
            response = server.session.post(f"{server.url}/models", json={"model_name": name, "url": url})
            assert response.status_code == 500 and response.json()["type"] == "ModelLoadError", (
                name,
                response.text,
            )
            assert phrase in response.json()["message"], (name, response.text)
        assert (
            server.session.post(f"{server.url}/models", json={"model_name": "good", "url": good}).status_code
            == 200
        )
        invoked = server.session.post(
            f"{server.url}/models/good/invoke", data=SETOSA, headers={"Content-Type": "text/csv"}
        )
        assert invoked.text == "setosa\n"
    finally:
        assert server.stop() == 0


# --- crafted forests ---------------------------------------------------------------------------


def _craft_forest(model_dir: Path, edit: Callable[[Any], None]) -> None:
    forest = skops.io.load(model_dir / "model.skops", trusted=["sklearn.tree._tree.Tree"])
    edit(forest.estimators_[0].tree_)
    skops.io.dump(forest, model_dir / "model.skops")


def _forest_cycle(tree: Any) -> None:
    state = tree.__getstate__()
    nodes = state["nodes"]
    split = int(np.flatnonzero(nodes["left_child"] != -1)[-1])
    nodes["left_child"][split] = 1  # an ancestor: scikit-learn's own walk would loop forever
    tree.__setstate__(state)


def _forest_feature(tree: Any) -> None:
    state = tree.__getstate__()
    state["nodes"]["feature"][0] = 1000
    tree.__setstate__(state)


def _forest_value(tree: Any) -> None:
    state = tree.__getstate__()
    state["values"][int(np.flatnonzero(state["nodes"]["left_child"] == -1)[0])] = np.inf
    tree.__setstate__(state)


@pytest.mark.parametrize(
    ("edit", "phrase"),
    [
        (_forest_cycle, "is the child of two nodes"),
        (_forest_feature, "node 0 splits on a feature outside the model's 4"),
        (_forest_value, "holds a value that is not finite"),
    ],
)
def test_crafted_forests_are_refused_naming_the_tree_and_node(
    tmp_path: Path, iris_forest: TrainingTree, edit: Callable[[Any], None], phrase: str
) -> None:
    shutil.copytree(iris_forest.model_dir, tmp_path / "model")
    _craft_forest(tmp_path / "model", edit)
    _serve_refuses(tmp_path, "model.skops, tree 0: ", phrase)


# --- manifests that disagree with the model ----------------------------------------------------


@pytest.mark.parametrize("algorithm", ["random_forest", "xgboost"])
def test_a_manifest_with_fewer_features_than_the_model_is_refused_at_load(
    tmp_path: Path, iris_forest: TrainingTree, iris_xgboost: TrainingTree, algorithm: str
) -> None:
    source = iris_forest if algorithm == "random_forest" else iris_xgboost
    shutil.copytree(source.model_dir, tmp_path / "model")
    manifest_path = tmp_path / "model" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["features"] = manifest["features"][:3]
    manifest_path.write_text(json.dumps(manifest))
    _serve_refuses(tmp_path, "the model reads 4 features, its manifest.json lists 3")


def test_an_xgboost_model_whose_categories_differ_from_its_manifest_is_refused(
    tmp_path: Path, categorical_models: dict[str, Path]
) -> None:
    shutil.copytree(categorical_models["xgboost"], tmp_path / "model")
    manifest_path = tmp_path / "model" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    colour = next(f for f in manifest["features"] if f["name"] == "colour")
    colour["categories"] = ["a", "b", "c", "d", "z"]
    manifest_path.write_text(json.dumps(manifest))
    _serve_refuses(tmp_path, "categories of feature 'colour' are not those its manifest.json lists")


# --- special files -----------------------------------------------------------------------------


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _dev_zero(path: Path) -> None:
    path.unlink()
    path.symlink_to("/dev/zero")


@pytest.mark.parametrize(
    ("file", "make", "phrase"),
    [
        ("manifest.json", _fifo, "manifest.json is a FIFO, not a regular file"),
        ("xgboost-model.ubj", _fifo, "xgboost-model.ubj is a FIFO, not a regular file"),
        ("xgboost-model.ubj", _dev_zero, "xgboost-model.ubj is a character device, not a regular file"),
    ],
)
def test_special_files_in_a_model_folder_are_refused_without_blocking(
    tmp_path: Path, iris_xgboost: TrainingTree, file: str, make: Callable[[Path], None], phrase: str
) -> None:
    shutil.copytree(iris_xgboost.model_dir, tmp_path / "model")
    make(tmp_path / "model" / file)
    _serve_refuses(tmp_path, phrase)


def test_fifos_never_jam_a_multi_model_endpoints_loads(
    tmp_path: Path, iris_forest: TrainingTree, iris_xgboost: TrainingTree
) -> None:
    urls = {}
    for index, (source, file) in enumerate(
        [
            (iris_xgboost, "manifest.json"),
            (iris_xgboost, "xgboost-model.ubj"),
            (iris_forest, "model.skops"),
            (iris_forest, "manifest.json"),
        ]
    ):
        urls[f"special-{index}"] = place_model(tmp_path, f"special-{index}", source.model_dir)
        # (A link to /dev/zero is refused there before it is opened: it leads out of the folder.)
        _fifo(Path(urls[f"special-{index}"]) / file)
    good = place_model(tmp_path, "good", iris_forest.model_dir)
    server = Server(tmp_path, SAGEMAKER_MULTI_MODEL="true", SAGECRAFT_MODEL_LOAD_TIMEOUT="20").wait_ready()
    try:
        for name, url in urls.items():
            response = server.session.post(
                f"{server.url}/models", json={"model_name": name, "url": url}, timeout=30
            )
            assert response.status_code == 500, (name, response.text)
            assert "is a FIFO, not a regular file" in response.json()["message"], response.text
        loaded = server.session.post(f"{server.url}/models", json={"model_name": "good", "url": good})
        assert loaded.status_code == 200, loaded.text
        invoked = server.session.post(
            f"{server.url}/models/good/invoke", data=SETOSA, headers={"Content-Type": "text/csv"}
        )
        assert invoked.text == "setosa\n"
    finally:
        assert server.stop() == 0


def test_a_model_file_over_the_size_limit_is_refused_before_it_is_read(
    tmp_path: Path, iris_xgboost: TrainingTree
) -> None:
    shutil.copytree(iris_xgboost.model_dir, tmp_path / "model")
    with (tmp_path / "model" / "xgboost-model.ubj").open("r+b") as model_file:
        model_file.truncate(3 * 1024 * 1024)  # sparse: weighs nothing on disk
    _serve_refuses(
        tmp_path, "over the limit of 2,097,152 (SAGECRAFT_MAX_MODEL_FILE_MB)", SAGECRAFT_MAX_MODEL_FILE_MB="2"
    )


# --- a model that trains must serve ------------------------------------------------------------


def test_a_base_score_beyond_float32_is_refused_before_training(tmp_path: Path) -> None:
    tree = TrainingTree(tmp_path)
    tree.add_file("train", "train.csv", "1,0.5\n0,0.2\n1,0.9\n0,0.1\n")
    tree.hyperparameters({"algorithm": "xgboost", "num_round": 2, "base_score": 1e39})
    assert tree.train().returncode == 1
    assert tree.failure is not None and "'base_score' = 1e+39 is out of range" in tree.failure
    assert not (tmp_path / "model" / "xgboost-model.ubj").exists()


UNLOADABLE_PLUGIN = """
    import json
    import numpy as np
    from sagecraft.errors import ModelLoadError
    from sagecraft.hooks import AlgorithmInfo, hookimpl

    @hookimpl
    def algorithm_info():
        return AlgorithmInfo(description="saves a model it cannot load")

    @hookimpl
    def fit(train):
        return {"constant": 0}

    @hookimpl
    def save_model(model, model_dir):
        (model_dir / "model.json").write_text(json.dumps(model))

    @hookimpl
    def load_model(model_dir):
        raise ModelLoadError(f"{model_dir / 'model.json'}: this plugin cannot read its own file")

    @hookimpl
    def predict(model, features):
        return np.zeros(len(features))
"""


def test_a_model_that_does_not_load_back_fails_the_job_and_is_not_left_in_model(tmp_path: Path) -> None:
    site = install_test_plugin(
        tmp_path / "site",
        "sagecraft-unloadable",
        {"unloadable": "sagecraft_unloadable"},
        {"sagecraft_unloadable": UNLOADABLE_PLUGIN},
    )
    tree = TrainingTree(tmp_path / "job", pythonpath=site)
    tree.add_file("train", "train.csv", "1,0.5\n0,0.2\n1,0.9\n0,0.1\n")
    tree.hyperparameters({"algorithm": "unloadable"})
    assert tree.train().returncode == 1, tree.explain()
    assert tree.failure is not None, tree.explain()
    assert tree.failure.startswith("the trained model does not load back"), tree.failure
    assert "cannot read its own file" in tree.failure and "UnservableModelError" in tree.failure
    assert list(tree.model_dir.iterdir()) == []
