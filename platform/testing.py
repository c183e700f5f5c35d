"""Helpers for testing a plugin through sagecraft's real training and loading code, in-process.

    from sagecraft.testing import train, load

    def test_my_algorithm(tmp_path):
        model_dir = train(tmp_path, {"algorithm": "my_algo", "target": "y"}, "x,y\\n1,0\\n2,1\\n")
        model = load(model_dir)
        assert model.predict(pandas.DataFrame({"x": [1.5]})).tolist() == [1]

The plugin must be installed (its entry point is how sagecraft finds it), e.g. `pip install -e .`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from .environment import SageMakerPaths
from .loaded_model import LoadedModel
from .training.trainer import train as run_training_job

__all__ = [
    "load",
    "train",
    "write_training_job",
]


def write_training_job(
    base: Path,
    hyperparameters: Mapping[str, object],
    train_csv: str,
    validation_csv: str | None = None,
) -> SageMakerPaths:
    """Lay out a SageMaker training tree under `base`, values encoded as the generic Estimator does."""
    paths = SageMakerPaths(Path(base))
    paths.config_dir.mkdir(parents=True, exist_ok=True)
    paths.hyperparameters_file.write_text(json.dumps({k: str(v) for k, v in hyperparameters.items()}))
    channels = {"train": train_csv, "validation": validation_csv}
    for channel, text in channels.items():
        if text is not None:
            paths.channel_dir(channel).mkdir(parents=True, exist_ok=True)
            (paths.channel_dir(channel) / "data.csv").write_text(text)
    return paths


def train(
    base: Path,
    hyperparameters: Mapping[str, object],
    train_csv: str,
    validation_csv: str | None = None,
) -> Path:
    """Run a training job in-process and return the model folder.

    Raises the same `sagecraft.errors.SagecraftError` that `sagecraft train` writes to
    output/failure, so tests can assert on user errors too.
    """
    paths = write_training_job(base, hyperparameters, train_csv, validation_csv)
    run_training_job(paths)
    return paths.model_dir


def load(model_dir: Path) -> LoadedModel:
    """Load a model folder as `sagecraft serve` does; `.predict(frame, output)` answers with labels."""
    return LoadedModel.load(model_dir)
