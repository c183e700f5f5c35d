"""Each hook of sagecraft.hooks, exercised through real entry points and the real processes.

Every hook specification must have a test here whose name starts `test_hook_` and contains the
hook's name (`test_hook_fit_...`, `test_hook_save_model_and_load_model_...`), and a section in
docs/plugins.md; the last two tests enforce that.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sagecraft.hooks import HOOK_API_VERSION
from sagecraft.plugins import hook_names
from sagemaker_tree import (
    REPO,
    SAGECRAFT,
    Server,
    TrainingTree,
    environment,
    install_test_plugin,
    iris_tree,
    regression_rows,
)

PROBE = """
    import json
    import numpy as np
    from sagecraft.errors import ModelLoadError
    from sagecraft.hooks import AlgorithmInfo, Hyperparameter, hookimpl

    @hookimpl
    def algorithm_info():
        return AlgorithmInfo(description="records what sagecraft hands it", hyperparameters=[
            Hyperparameter("depth", int, "a declared integer", default=3, minimum=1,
                           aliases=("levels",))])

    @hookimpl
    def infer_task(hyperparameters):
        return "classification" if hyperparameters["depth"] == 7 else None

    @hookimpl
    def fit(train, validation, hyperparameters, context):
        context.log_metrics(0, {"train-rows": float(train.n_rows)})
        return {"labels": train.labels.tolist()[:4], "label_kind": train.labels.dtype.kind,
                "validation_rows": None if validation is None else validation.n_rows,
                "classes": list(context.classes), "task": context.task,
                "features": list(context.feature_names), "hyperparameters": hyperparameters,
                "columns": list(train.features.columns)}

    @hookimpl
    def save_model(model, model_dir):
        (model_dir / "probe.json").write_text(json.dumps(model))

    @hookimpl
    def load_model(model_dir):
        try:
            return json.loads((model_dir / "probe.json").read_text())
        except ValueError as exc:
            raise ModelLoadError(f"probe.json is damaged: {exc}") from None

    @hookimpl
    def describe_model(model_dir):
        path = model_dir / "probe.json"
        if not path.exists():
            return None
        from sagecraft.manifest import Feature, Manifest
        model = json.loads(path.read_text())
        return Manifest(algorithm="probe", task=model["task"], target=None, classes=model["classes"],
                        features=[Feature(name, "float64") for name in model["features"]],
                        plugin={"name": "probe"}, libraries={}, hyperparameters={})

    @hookimpl
    def builtin_default_output(model, manifest):
        return {9: "probabilities", 8: "shap"}.get(model["hyperparameters"]["depth"])

    @hookimpl
    def predict(model, features, output):
        if output == "probabilities":
            return np.full((len(features), len(model["classes"])), 1 / len(model["classes"]))
        return np.arange(len(features)) % max(1, len(model["classes"]))
"""

EXTENSION = """
    import io, json, logging, time
    import pandas as pd
    from sagecraft.errors import BadRequestError
    from sagecraft.hooks import hookimpl

    def read_tsv(body, feature_names):
        rows = [line.split("\\t") for line in body.decode().splitlines() if line]
        if any(len(row) != len(feature_names) for row in rows):
            raise BadRequestError("every TSV row needs one value per feature")
        return pd.DataFrame([[float(v) for v in row] for row in rows], columns=list(feature_names))

    @hookimpl
    def register_content_types(registry):
        registry.add_decoder("text/tab-separated-values", read_tsv)
        registry.add_encoder("text/tab-separated-values",
                             lambda predictions: "\\t".join(map(str, predictions)).encode())

    @hookimpl
    def training_started(algorithm, hyperparameters, output_data_dir):
        (output_data_dir / "started.json").write_text(
            json.dumps({"algorithm": algorithm, "hyperparameters": hyperparameters}))

    @hookimpl
    def training_finished(algorithm, model_dir, output_data_dir, manifest):
        files = sorted(p.name for p in model_dir.iterdir())
        (output_data_dir / "finished.json").write_text(
            json.dumps({"files": files, "classes": manifest["classes"]}))

    @hookimpl(wrapper=True)
    def predict(model, features, output):
        started = time.perf_counter()
        result = yield
        logging.getLogger("timing").warning("TIMED %d rows in %.3f s", len(features),
                                            time.perf_counter() - started)
        return result
"""

SECOND_TSV = """
    from sagecraft.hooks import hookimpl

    @hookimpl
    def register_content_types(registry):
        registry.add_decoder("text/tab-separated-values", lambda body, names: None)
"""

FUTURE = """
    from sagecraft.hooks import AlgorithmInfo, hookimpl

    @hookimpl
    def algorithm_info():
        return AlgorithmInfo(description="from the future", api_version=99)

    @hookimpl
    def fit(train):
        return {}

    @hookimpl
    def save_model(model, model_dir):
        pass

    @hookimpl
    def load_model(model_dir):
        return {}

    @hookimpl
    def predict(model, features):
        return None
"""

# Answers class code 0 (setosa) when `predict` runs on the server's main thread, the event loop's,
# and 1 (versicolor) in a worker thread; THREADED_WHERE declares predict_in_thread.
WHERE = """
    import json, threading
    import numpy as np
    from sagecraft.hooks import AlgorithmInfo, hookimpl

    @hookimpl
    def algorithm_info():
        return AlgorithmInfo(description="answers where predict ran", api_version=3,
                             predict_in_thread=IN_THREAD)

    @hookimpl
    def fit(train):
        return {}

    @hookimpl
    def save_model(model, model_dir):
        (model_dir / "where.json").write_text("{}")

    @hookimpl
    def load_model(model_dir):
        return {}

    @hookimpl
    def predict(model, features):
        return np.full(len(features), int(threading.current_thread() is not threading.main_thread()))
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("hook-site")
    install_test_plugin(site, "sagecraft-probe", {"probe": "sagecraft_probe"}, {"sagecraft_probe": PROBE})
    install_test_plugin(
        site, "sagecraft-extension", {"extension": "sagecraft_extension"}, {"sagecraft_extension": EXTENSION}
    )
    install_test_plugin(
        site, "sagecraft-future", {"future": "sagecraft_future"}, {"sagecraft_future": FUTURE}
    )
    for name, in_thread in (("where", False), ("threaded_where", True)):
        source = WHERE.replace("IN_THREAD", str(in_thread))
        install_test_plugin(
            site, f"sagecraft-{name}", {name: f"sagecraft_{name}"}, {f"sagecraft_{name}": source}
        )
    return site


def _probe_job(tmp_path: Path, site: Path, **hyperparameters: object) -> TrainingTree:
    tree = iris_tree(tmp_path, {"algorithm": "probe", "target": "Species", **hyperparameters})
    tree.pythonpath = site
    return tree


def _probe_model(tree: TrainingTree) -> dict:
    return json.loads((tree.model_dir / "probe.json").read_text())


def test_hook_algorithm_info_declarations_are_validated_by_the_core(site: Path, tmp_path: Path) -> None:
    tree = _probe_job(tmp_path, site, levels="5")
    assert tree.train().returncode == 0, tree.explain()
    assert _probe_model(tree)["hyperparameters"] == {"depth": 5}
    bad = _probe_job(tmp_path / "bad", site, levels=0)
    assert bad.train().returncode == 1
    assert "hyperparameter 'levels' ('depth') = 0 is out of range" in bad.failure


def test_hook_algorithm_info_newer_api_version_makes_the_plugin_unavailable(
    site: Path, tmp_path: Path
) -> None:
    tree = iris_tree(tmp_path, {"algorithm": "future", "target": "Species"})
    tree.pythonpath = site
    assert tree.train().returncode == 1
    assert f"needs hook API version 99; this sagecraft provides {HOOK_API_VERSION}" in tree.failure


def test_hook_infer_task_decides_when_task_is_absent(site: Path, tmp_path: Path) -> None:
    tree = TrainingTree(tmp_path, pythonpath=site)
    tree.add_file("train", "d.csv", "".join(f"{i % 2},{i}\n" for i in range(10)))
    tree.hyperparameters({"algorithm": "probe", "depth": 7})
    assert tree.train().returncode == 0, tree.explain()
    assert _probe_model(tree)["task"] == "classification"
    assert _probe_model(tree)["classes"] == [0, 1]
    # and the real XGBoost plugin answers from its objective
    xgb = TrainingTree(tmp_path / "xgb")
    xgb.add_file("train", "d.csv", "".join(f"{i % 2},{i}\n" for i in range(20)))
    xgb.hyperparameters({"algorithm": "xgboost", "objective": "binary:logistic", "num_round": 2})
    assert xgb.train().returncode == 0, xgb.explain()
    assert json.loads((xgb.model_dir / "manifest.json").read_text())["classes"] == [0, 1]


def test_hook_fit_receives_encoded_labels_validation_and_context(site: Path, tmp_path: Path) -> None:
    tree = _probe_job(tmp_path, site)
    header, *rows = (REPO / "demo" / "iris.csv").read_text().splitlines()
    tree.add_file("validation", "v.csv", "\n".join([header, *rows[:7]]))
    result = tree.train()
    assert result.returncode == 0, tree.explain()
    model = _probe_model(tree)
    assert model["label_kind"] == "i" and set(model["labels"]) <= {0, 1, 2}
    assert model["classes"] == ["setosa", "versicolor", "virginica"]
    assert model["task"] == "classification"
    assert model["validation_rows"] == 7
    assert model["features"] == model["columns"] == header.split(",")[:4]
    assert "[0]\ttrain-rows:150" in result.stdout


def test_hook_save_model_and_load_model_round_trip_through_serve(site: Path, tmp_path: Path) -> None:
    tree = _probe_job(tmp_path, site)
    assert tree.train().returncode == 0, tree.explain()
    assert sorted(p.name for p in tree.model_dir.iterdir()) == ["manifest.json", "probe.json"]
    server = Server(tree.base, pythonpath=site).wait_ready()
    try:
        assert server.invoke("1,2,3,4\n1,2,3,4").text == "setosa\nversicolor\n"
    finally:
        server.stop()


def test_hook_describe_model_serves_a_folder_without_a_manifest(site: Path, tmp_path: Path) -> None:
    tree = _probe_job(tmp_path, site)
    assert tree.train().returncode == 0, tree.explain()
    (tree.model_dir / "manifest.json").unlink()
    server = Server(tree.base, pythonpath=site).wait_ready()
    try:
        assert server.invoke("1,2,3,4\n1,2,3,4").text == "setosa\nversicolor\n"
        assert "has no manifest.json: serving it as a probe model" in server.log()
    finally:
        server.stop()


def test_hook_builtin_default_output_makes_a_model_answer_as_a_builtin_algorithm(
    site: Path, tmp_path: Path
) -> None:
    tree = _probe_job(tmp_path / "builtin", site, depth=9)
    assert tree.train().returncode == 0, tree.explain()
    server = Server(tree.base, pythonpath=site).wait_ready()
    try:
        third = 1 / 3
        assert [list(map(float, line.split(","))) for line in server.invoke("1,2,3,4").text.split()] == [
            [third] * 3
        ]
        answer = server.invoke("1,2,3,4", accept="application/json").json()
        assert answer == {"predictions": [{"score": [third] * 3}]}
        chosen = server.invoke("1,2,3,4", accept="application/json; output=predicted_label").json()
        assert chosen == {"predictions": [{"predicted_label": "setosa"}]}
    finally:
        server.stop()
    refused = _probe_job(tmp_path / "refused", site, depth=8)
    assert refused.train().returncode == 1  # the trainer loads the model back: the kind is refused
    assert "builtin_default_output returned 'shap', not one of predicted_label" in (refused.failure or "")


def test_hook_load_model_error_stops_serve_with_its_message(site: Path, tmp_path: Path) -> None:
    tree = _probe_job(tmp_path, site)
    assert tree.train().returncode == 0, tree.explain()
    (tree.model_dir / "probe.json").write_text("{not json")
    server = Server(tree.base, pythonpath=site)
    assert server.process.wait(60) == 1
    assert "probe.json is damaged" in server.log()
    server.stop()


def test_hook_predict_is_wrapped_by_an_extension_plugin(
    site: Path, iris_forest: TrainingTree, tmp_path: Path
) -> None:
    server = Server(iris_forest.base, pythonpath=site).wait_ready()
    try:
        assert server.invoke("5.0,3.4,1.5,0.2").text == "setosa\n"
        server.stop()
        assert re.search(r"TIMED 1 rows in \d", server.log())
    finally:
        server.stop()


@pytest.mark.parametrize(("algorithm", "small_in_thread"), [("where", False), ("threaded_where", True)])
def test_hook_predict_runs_small_requests_on_the_event_loop_unless_the_plugin_asks_for_a_thread(
    site: Path, tmp_path: Path, algorithm: str, small_in_thread: bool
) -> None:
    """What the hook's documentation says: a few rows are predicted on the event loop (the main
    thread), a large request in a worker thread; `predict_in_thread` sends every request there."""
    tree = _probe_job(tmp_path, site, algorithm=algorithm)
    assert tree.train().returncode == 0, tree.explain()
    server = Server(tree.base, pythonpath=site).wait_ready()
    try:
        small = "setosa" if not small_in_thread else "versicolor"
        assert server.invoke("1,2,3,4").text == f"{small}\n"
        assert server.invoke("1,2,3,4", accept="application/json").json() == {"predictions": [small]}
        large = server.invoke("1,2,3,4\n" * 5000)  # over 16 KiB: always in the pool
        assert set(large.text.split()) == {"versicolor"}
    finally:
        server.stop()


def test_hook_register_content_types_adds_a_type_to_the_server(site: Path, iris_forest: TrainingTree) -> None:
    server = Server(iris_forest.base, pythonpath=site).wait_ready()
    try:
        tsv = "5.0\t3.4\t1.5\t0.2\n6.6\t3.0\t5.6\t2.0\n"
        response = server.invoke(tsv, "text/tab-separated-values", accept="text/tab-separated-values")
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"] == "text/tab-separated-values"
        assert response.text == "setosa\tvirginica"
        bad = server.invoke("1\t2\n", "text/tab-separated-values")
        assert bad.status_code == 400
        assert "one value per feature" in bad.json()["message"]
        assert server.invoke("5.0,3.4,1.5,0.2").text == "setosa\n"  # built-ins still there
    finally:
        server.stop()


def test_hook_register_content_types_conflict_is_reported(site: Path, tmp_path: Path) -> None:
    import subprocess

    install_test_plugin(
        tmp_path / "more",
        "sagecraft-tsv-too",
        {"tsv_too": "sagecraft_tsv_too"},
        {"sagecraft_tsv_too": SECOND_TSV},
    )
    pythonpath = f"{site}:{tmp_path / 'more'}"
    listing = subprocess.run(
        [*SAGECRAFT, "plugins"],
        env=environment(tmp_path, Path(pythonpath)),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "content types: text/tab-separated-values" in listing
    assert "plugins 'extension' and 'tsv_too' both add a decoder for text/tab-separated-values" in listing


def test_hook_training_started_and_training_finished_see_the_job(site: Path, tmp_path: Path) -> None:
    tree = TrainingTree(tmp_path, pythonpath=site)
    tree.add_file("train", "d.csv", regression_rows(0, 50))
    tree.hyperparameters({"algorithm": "random_forest", "ntree": 3})
    assert tree.train().returncode == 0, tree.explain()
    output = tree.base / "output" / "data"
    started = json.loads((output / "started.json").read_text())
    assert started["algorithm"] == "random_forest"
    assert started["hyperparameters"]["n_estimators"] == 3
    finished = json.loads((output / "finished.json").read_text())
    assert finished == {"files": ["manifest.json", "model.skops"], "classes": []}


def test_only_the_plugins_named_in_sagecraft_plugins_load(site: Path, tmp_path: Path) -> None:
    import subprocess

    env = environment(tmp_path, site, SAGECRAFT_PLUGINS="random_forest,extension")
    listing = subprocess.run(
        [*SAGECRAFT, "plugins"], env=env, capture_output=True, text=True, check=True
    ).stdout
    names = {line.split()[0] for line in listing.splitlines() if line and not line[0].isspace()}
    assert names == {"random_forest", "extension", "sagecraft"}


def test_trace_switch_logs_hook_calls(tmp_path: Path) -> None:
    tree = TrainingTree(tmp_path)
    tree.add_file("train", "d.csv", regression_rows(0, 30))
    tree.hyperparameters({"algorithm": "random_forest", "ntree": 2})
    result = tree.train(SAGECRAFT_TRACE_HOOKS="true")
    assert result.returncode == 0, tree.explain()
    assert re.search(r"sagecraft\.hooks\.trace: .*fit", result.stderr)
    assert re.search(r"sagecraft\.hooks\.trace: .*save_model", result.stderr)


def test_every_hook_has_a_section_in_the_plugin_guide() -> None:
    guide = (REPO / "docs" / "plugins.md").read_text()
    sections = set(re.findall(r"^### `(\w+)\(", guide, flags=re.M))
    assert set(hook_names()) <= sections, set(hook_names()) - sections


def test_every_hook_has_a_test_here() -> None:
    tested = re.findall(r"^def test_hook_(\w+)\(", Path(__file__).read_text(), flags=re.M)
    missing = [
        name for name in hook_names() if not any(re.search(rf"(^|_){name}(_|$)", test) for test in tested)
    ]
    assert not missing, f"hooks without a test_hook_<name>_... test: {missing}"
