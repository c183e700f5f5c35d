"""The conformance suite (sagecraft.conformance): the built-in algorithms pass it, and a plugin
with the two faults third-party authors hit (NaN left to a library that refuses it, a model file
parsed without a check, crashing the process) fails it with messages that say what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from sagecraft.conformance import CHECKS, assert_conforms, check
from sagemaker_tree import install_test_plugin

pytestmark = pytest.mark.slow


# The built-ins' SIGTERM, checkpoint and multi-host behaviour has tests of its own, deeper than
# the checks' (tests/test_checkpoints.py, tests/test_several_hosts.py); the plugins' runs below
# (tests/test_example_plugin.py, tests/test_guide_walkthrough.py) take every check.
COVERED_ELSEWHERE = {"sigterm", "checkpoints", "several_hosts"}


@pytest.mark.parametrize("algorithm", ["random_forest", "xgboost"])
def test_the_built_in_algorithms_conform(tmp_path: Path, algorithm: str) -> None:
    assert_conforms(algorithm, tmp_path, only=[name for name in CHECKS if name not in COVERED_ELSEWHERE])


BROKEN = """
    import json, os
    import numpy as np
    from sagecraft.hooks import AlgorithmInfo, hookimpl
    from sagecraft.errors import UnsupportedOutputError

    @hookimpl
    def algorithm_info():
        return AlgorithmInfo(description="nearest class mean, with the usual mistakes")

    @hookimpl
    def fit(train, hyperparameters, context):
        matrix = train.features.to_numpy(dtype=float)
        if np.isnan(matrix).any():
            raise ValueError("Input contains NaN")  # what a library without missing values says
        codes = sorted(set(train.labels.tolist()))
        means = [matrix[train.labels == c].mean(axis=0).tolist() for c in codes]
        return {"means": means, "task": context.task}

    @hookimpl
    def save_model(model, model_dir):
        (model_dir / "model.json").write_text(json.dumps(model))

    @hookimpl
    def load_model(model_dir):
        text = (model_dir / "model.json").read_text(errors="replace")
        try:
            return json.loads(text)
        except ValueError:
            os.abort()  # a native parser reading past its buffer, as it were

    @hookimpl
    def predict(model, features, output):
        if output != "label":
            raise UnsupportedOutputError(f"no {output}")
        matrix = features.to_numpy(dtype=float)
        distances = [((matrix - np.array(m)) ** 2).sum(axis=1) for m in model["means"]]
        return np.argmin(np.stack(distances, axis=1), axis=1)
"""


def test_a_broken_plugin_fails_with_messages_that_say_what_to_fix(tmp_path: Path) -> None:
    site = install_test_plugin(
        tmp_path / "site", "broken-plugin", {"broken": "broken_plugin"}, {"broken_plugin": BROKEN}
    )
    # The checks its faults touch, and two it passes (the others are the built-ins' to pass).
    checked = ["text_labels", "outputs", "missing_values", "corrupt_model"]
    results = {
        r.name: r for r in check("broken", tmp_path / "work", env={"PYTHONPATH": str(site)}, only=checked)
    }
    assert set(results) == set(checked) and set(checked) <= set(CHECKS)
    assert results["text_labels"].passed and results["outputs"].passed
    assert not results["missing_values"].passed
    assert "Input contains NaN" in results["missing_values"].message
    assert not results["corrupt_model"].passed
    message = results["corrupt_model"].message
    assert "killed the process that loaded it" in message and "SIGABRT" in message, message
    assert "refuse it with ModelLoadError" in results["corrupt_model"].message
    with pytest.raises(AssertionError, match=r"algorithm 'broken' fails \d conformance check"):
        assert_conforms("broken", tmp_path / "again", env={"PYTHONPATH": str(site)}, only=["corrupt_model"])


READS_EMPTY_AS_ZERO = """
    import json
    import numpy as np
    from sagecraft.hooks import AlgorithmInfo, hookimpl

    @hookimpl
    def algorithm_info():
        return AlgorithmInfo(description="nearest class mean, imputing in fit only")

    @hookimpl
    def fit(train, hyperparameters, context):
        matrix = train.features.to_numpy(dtype=float)
        matrix = np.where(np.isnan(matrix), np.nanmean(matrix, axis=0), matrix)
        codes = sorted(set(train.labels.tolist()))
        return {"means": [matrix[train.labels == c].mean(axis=0).tolist() for c in codes]}

    @hookimpl
    def save_model(model, model_dir):
        (model_dir / "model.json").write_text(json.dumps(model))

    @hookimpl
    def load_model(model_dir):
        return json.loads((model_dir / "model.json").read_text())

    @hookimpl
    def predict(model, features, output):
        matrix = np.nan_to_num(features.to_numpy(dtype=float))  # the mistake: an empty cell as 0
        distances = [((matrix - np.array(m)) ** 2).sum(axis=1) for m in model["means"]]
        return np.argmin(np.stack(distances, axis=1), axis=1)
"""


def test_a_plugin_that_reads_an_empty_cell_as_zero_fails_the_missing_values_check(tmp_path: Path) -> None:
    """What a LightGBM plugin did (training had no empty cells, requests did): found, and named."""
    site = install_test_plugin(
        tmp_path / "site", "zero-plugin", {"zero": "zero_plugin"}, {"zero_plugin": READS_EMPTY_AS_ZERO}
    )
    (result,) = check("zero", tmp_path / "work", env={"PYTHONPATH": str(site)}, only=["missing_values"])
    assert not result.passed
    assert "rows with an empty `a` were answered like a = 0" in result.message
    assert "an empty cell is a missing value (NaN), not 0" in result.message
