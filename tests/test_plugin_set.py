"""Units: the plugin set factory (sagecraft.plugins.build_plugin_set) on entry points built here,
and the facade it returns (algorithm hooks on `Algorithm`, training hooks on `PluginSet`)."""

from __future__ import annotations

import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from sagecraft.environment import PluginSettings
from sagecraft.errors import PluginConflictError, PluginError, UnknownAlgorithmError
from sagecraft.plugins import build_plugin_set

MODULES = {
    "unit_algo": """
        from sagecraft.hooks import AlgorithmInfo, hookimpl
        seen = []

        @hookimpl
        def algorithm_info():
            return AlgorithmInfo(description="unit", api_version=3, predict_in_thread=True)

        @hookimpl
        def fit(train):
            return "model"

        @hookimpl
        def save_model(model, model_dir):
            pass

        @hookimpl
        def load_model(model_dir):
            return "model"

        @hookimpl
        def predict(model, features):
            return [0]

        @hookimpl
        def training_started(algorithm, hyperparameters, output_data_dir):
            seen.append(("started", algorithm, dict(hyperparameters)))

        @hookimpl
        def training_finished(algorithm, manifest):
            seen.append(("finished", algorithm, manifest["task"]))
    """,
    "unit_half": """
        from sagecraft.hooks import hookimpl

        @hookimpl
        def fit(train):
            return "model"
    """,
    "unit_misspelt": """
        from sagecraft.hooks import hookimpl

        @hookimpl
        def predcit(model, features):
            return None
    """,
    "unit_tsv": """
        from sagecraft.hooks import hookimpl

        @hookimpl
        def register_content_types(registry):
            registry.add_decoder("text/tab-separated-values", lambda body, names: None)
    """,
}


@pytest.fixture
def entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[metadata.EntryPoint]:
    for name, source in MODULES.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))

    def ep(name: str, value: str) -> metadata.EntryPoint:
        return metadata.EntryPoint(name=name, value=value, group="sagecraft")

    return [
        ep("unit", "unit_algo"),
        ep("half", "unit_half"),
        ep("misspelt", "unit_misspelt"),
        ep("tsv", "unit_tsv"),
        ep("missing", "unit_no_such_module"),
        ep("twice", "unit_tsv"),
        ep("twice", "unit_half"),
        ep("sagecraft", "unit_tsv"),
    ]


def test_every_problem_is_recorded_against_its_plugin_and_the_rest_load(
    entry_points: list[metadata.EntryPoint],
) -> None:
    plugins = build_plugin_set(entry_points)
    assert set(plugins.algorithms) == {"unit"}
    problems = {name: str(problem) for name, problem in plugins.problems.items()}
    assert "implements fit but not algorithm_info, save_model, load_model, predict" in problems["half"]
    assert "implements unknown hook(s) predcit" in problems["misspelt"]
    assert "failed to load: ModuleNotFoundError" in problems["missing"]
    assert isinstance(plugins.problems["twice"], PluginConflictError)
    assert "and by sagecraft itself" in problems["sagecraft"]
    assert "text/tab-separated-values" in plugins.content_types.decoders
    assert plugins.records["tsv"].content_types == ["text/tab-separated-values"]
    assert plugins.records["unit"].source.distribution == "<unknown distribution>"
    with pytest.raises(PluginError, match="implements fit but not"):
        plugins.algorithm("half")
    with pytest.raises(UnknownAlgorithmError, match=r"unknown algorithm 'uni'.*Installed algorithms: unit"):
        plugins.algorithm("uni")


def test_only_the_named_plugins_load(entry_points: list[metadata.EntryPoint]) -> None:
    plugins = build_plugin_set(entry_points, PluginSettings(only=frozenset({"unit"}), trace_hooks=False))
    assert set(plugins.records) == {"sagecraft", "unit"}
    assert not plugins.problems


def test_the_facade_calls_algorithm_and_training_hooks(
    entry_points: list[metadata.EntryPoint], tmp_path: Path
) -> None:
    import unit_algo  # type: ignore[import-not-found]

    plugins = build_plugin_set(entry_points)
    algorithm = plugins.algorithm("unit")
    assert algorithm.info.predict_in_thread is True
    assert algorithm.load_model(tmp_path) == "model"
    plugins.training_started(algorithm="unit", hyperparameters={"a": 1}, output_data_dir=tmp_path)
    plugins.training_finished(
        algorithm="unit", model_dir=tmp_path, output_data_dir=tmp_path, manifest={"task": "regression"}
    )
    assert unit_algo.seen == [("started", "unit", {"a": 1}), ("finished", "unit", "regression")]
