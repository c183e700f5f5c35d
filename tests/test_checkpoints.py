"""Checkpoints and stops, as SageMaker drives them: a job killed outright (a spot instance taken
back) resumes from its newest complete checkpoint and ends with the same model as a run that was
never interrupted; SIGTERM ends training early with a usable model and a last checkpoint."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from sagemaker_tree import SAGECRAFT, TrainingTree, environment, regression_rows

ROUNDS = 300


def _job(base: Path, rounds: int = ROUNDS) -> TrainingTree:
    tree = TrainingTree(base)
    tree.add_file("train", "train.csv", regression_rows(0, 8_000))
    tree.add_file("validation", "validation.csv", regression_rows(1, 1_000))
    tree.hyperparameters(
        {
            "algorithm": "xgboost",
            "num_round": rounds,
            "max_depth": 6,
            "checkpoint_rounds": 10,
            "eval_metric": "rmse",
        }
    )
    tree.write_config(
        "checkpointconfig.json", {"LocalPath": str(base / "checkpoints"), "S3Uri": "s3://bucket/checkpoints"}
    )
    return tree


def _checkpoint_rounds(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    found = []
    for path in folder.glob("xgboost-checkpoint.*.ubj"):
        middle = path.name.split(".")[1]
        if middle.isdigit():
            found.append(int(middle))
    return sorted(found)


def _start(tree: TrainingTree) -> subprocess.Popen:
    return subprocess.Popen(
        [*SAGECRAFT, "train"],
        env=environment(tree.base),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_checkpoint(tree: TrainingTree, process: subprocess.Popen, least: int) -> None:
    deadline = time.monotonic() + 120
    while not any(r >= least for r in _checkpoint_rounds(tree.base / "checkpoints")):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)


def _predictions(model_dir: Path) -> np.ndarray:
    booster = xgb.Booster()
    booster.load_model(str(model_dir / "xgboost-model.ubj"))
    rows = np.random.default_rng(5).normal(size=(500, 5)).astype(np.float32)
    return booster.inplace_predict(rows)


@pytest.mark.slow
def test_a_killed_job_resumes_from_its_newest_checkpoint_to_the_same_model(tmp_path: Path) -> None:
    reference = _job(tmp_path / "uninterrupted")
    assert reference.train().returncode == 0, reference.explain()

    tree = _job(tmp_path / "interrupted")
    process = _start(tree)
    _wait_for_checkpoint(tree, process, 30)
    process.kill()  # SIGKILL: no chance to save anything
    process.communicate()
    checkpoints = tree.base / "checkpoints"
    written = _checkpoint_rounds(checkpoints)
    assert written and max(written) < ROUNDS, written
    # What S3 sync may leave: an upload cut short, named as a newer checkpoint, and a stray file.
    newest = max(written)
    (checkpoints / f"xgboost-checkpoint.{newest + 100}.ubj").write_bytes(
        (checkpoints / f"xgboost-checkpoint.{newest}.ubj").read_bytes()[:1000]
    )
    (checkpoints / "xgboost-checkpoint.notes.txt").write_text("not a checkpoint")

    result = tree.train()
    assert result.returncode == 0, tree.explain()
    assert f"xgboost-checkpoint.{newest + 100}.ubj does not load" in result.stderr
    assert f"resuming from checkpoint {checkpoints}/xgboost-checkpoint.{newest}.ubj" in result.stderr
    # The metric lines count on from the checkpoint instead of restarting at 0.
    assert f"[{newest}]\t" in result.stdout and "[0]\t" not in result.stdout
    assert np.array_equal(_predictions(tree.model_dir), _predictions(reference.model_dir))


@pytest.mark.slow
def test_sigterm_during_training_saves_a_usable_model_and_a_checkpoint(tmp_path: Path) -> None:
    tree = _job(tmp_path, rounds=100_000)
    process = _start(tree)
    _wait_for_checkpoint(tree, process, 10)
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert time.monotonic() - started < 30, "SageMaker kills the job 120 s after SIGTERM"
    assert process.returncode == 0, stderr
    assert "stopped by SIGTERM: saving the model trained so far" in stderr
    rounds = xgb.Booster(model_file=str(tree.model_dir / "xgboost-model.ubj")).num_boosted_rounds()
    assert 10 <= rounds < 100_000
    assert rounds in _checkpoint_rounds(tree.base / "checkpoints")  # the last round's checkpoint
    assert (tree.model_dir / "manifest.json").exists()
    assert _predictions(tree.model_dir).shape == (500,)


def test_without_a_checkpoint_configuration_nothing_is_written(tmp_path: Path) -> None:
    tree = TrainingTree(tmp_path)
    tree.add_file("train", "train.csv", regression_rows(0, 200))
    tree.hyperparameters({"algorithm": "xgboost", "num_round": 25, "checkpoint_rounds": 5})
    assert tree.train().returncode == 0, tree.explain()
    assert not (tmp_path / "checkpoints").exists()
    assert sorted(os.listdir(tree.model_dir)) == ["manifest.json", "xgboost-model.ubj"]


@pytest.mark.slow
def test_sigterm_stops_a_forest_between_stages_with_the_trees_grown(tmp_path: Path) -> None:
    from sagecraft.loaded_model import LoadedModel

    tree = TrainingTree(tmp_path)
    tree.add_file("train", "train.csv", regression_rows(0, 4_000))
    tree.hyperparameters({"algorithm": "random_forest", "ntree": 3000, "n_jobs": 2, "max_depth": 8})
    process = _start(tree)
    assert process.stderr is not None
    for line in process.stderr:
        if "fitting random_forest" in line:
            break
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    grown = int(re.search(r"stopping with (\d+) of 3000 trees", stderr).group(1))
    assert 300 <= grown < 3000
    model = LoadedModel.load(tree.model_dir)
    assert len(model.model.forest.estimators_) == grown
