"""What a saved model says about itself: manifest.json beside the plugin's files in the model folder.

The server reads it to pick the plugin, name and order the request's columns, and map class codes
back to the original labels, so a model folder is self-describing.
"""

from __future__ import annotations

import json
import platform as stdlib_platform
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from .errors import ModelLoadError
from .files import read_regular

__all__ = [
    "MANIFEST_FILE",
    "Feature",
    "Manifest",
    "runtime_libraries",
]

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1
# A manifest is a few KB; thousands of categories make it a few MB.
MAX_MANIFEST_BYTES = 64 * 1024 * 1024


def sagecraft_version() -> str:
    try:
        return metadata.version("sagecraft")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class Feature:
    name: str
    type: str  # the pandas dtype it was trained with, e.g. "float64", or "category"
    categories: list[str] | None = None  # a categorical feature's training values, sorted


@dataclass(frozen=True)
class Manifest:
    algorithm: str
    task: str
    features: list[Feature]
    target: str | None
    classes: list[Any]
    plugin: dict[str, str]
    libraries: dict[str, str]
    hyperparameters: dict[str, Any]
    format_version: int = FORMAT_VERSION
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def categories(self) -> dict[str, list[str]]:
        """The categories of each categorical feature (see categories.py)."""
        return {f.name: f.categories for f in self.features if f.categories is not None}

    def require_features(self, count: int, where: object) -> None:
        """Raise ModelLoadError unless the model in `where` takes this manifest's features: the
        server decodes every request to the manifest's columns, and a model that reads more
        would read past each row."""
        if count != len(self.features):
            raise ModelLoadError(
                f"{where}: the model reads {count} features, its manifest.json lists {len(self.features)}"
            )

    def to_json(self) -> dict[str, Any]:
        """The manifest as manifest.json holds it."""
        return json.loads(json.dumps(asdict(self), default=str))

    def write(self, model_dir: Path) -> Path:
        path = model_dir / MANIFEST_FILE
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def of_trained_model(
        cls,
        *,
        algorithm: str,
        plugin: Mapping[str, str],
        plugin_libraries: Mapping[str, str],
        task: str,
        dtypes: Mapping[Any, Any],
        levels: Mapping[str, list[str]],
        target: str | None,
        classes: Sequence[Any],
        hyperparameters: Mapping[str, Any],
    ) -> Manifest:
        """The manifest of a model just trained: `plugin` names the plugin's distribution and
        version, `dtypes` are the training table's column types in order, and the columns in
        `levels` (see categories.levels) are categorical, with their training categories."""
        features = [
            Feature(str(name), "category" if str(name) in levels else str(dtype), levels.get(str(name)))
            for name, dtype in dtypes.items()
        ]
        return cls(
            algorithm=algorithm,
            task=task,
            features=features,
            target=target,
            classes=list(classes),
            plugin=dict(plugin),
            libraries=runtime_libraries(dict(plugin_libraries)),
            hyperparameters=dict(hyperparameters),
        )

    @classmethod
    def read(cls, model_dir: Path) -> Manifest:
        path = model_dir / MANIFEST_FILE
        try:
            data = json.loads(
                read_regular(path, MAX_MANIFEST_BYTES, ModelLoadError, "a manifest's fixed limit")
            )
        except FileNotFoundError:
            raise ModelLoadError(
                f"{path} is missing: {model_dir} was not written by `sagecraft train`"
            ) from None
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{path} cannot be read: {exc}") from None
        if not isinstance(data, dict):
            raise ModelLoadError(f"{path} is not a sagecraft manifest: it holds no JSON object")
        try:
            version = data.get("format_version")
            if version != FORMAT_VERSION:
                raise ModelLoadError(
                    f"{path} has format_version {version!r}; this sagecraft reads {FORMAT_VERSION}"
                )
            features = [Feature(**f) for f in data.pop("features")]
            return cls(features=features, **data)
        except (TypeError, KeyError, AttributeError) as exc:
            raise ModelLoadError(f"{path} is not a sagecraft manifest: {exc}") from None


def runtime_libraries(plugin_libraries: dict[str, str]) -> dict[str, str]:
    """Versions worth knowing when a model misbehaves: Python, the core's and the plugin's."""
    versions = {"python": stdlib_platform.python_version(), "sagecraft": sagecraft_version()}
    for name in ("numpy", "pandas"):
        versions[name] = metadata.version(name)
    versions.update(plugin_libraries)
    return versions
