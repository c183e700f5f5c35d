"""Build the plugin manager once: load entry points, check them, and hand out one algorithm.

Design: every algorithm plugin implements the same hooks (`fit`, `predict`, ...). Rather than
making each implementation check whether a call is meant for it, `Algorithm` holds pluggy
*subset hook callers* that leave out every other algorithm plugin. Plugins that implement no
algorithm hook (wrappers for timing, logging, ...) stay in every subset, so they still wrap the
selected algorithm's calls.

pluggy's own `load_setuptools_entrypoints` silently skips an entry point whose name is already
registered, so a second distribution claiming `xgboost` would vanish without a word; we read the
entry points ourselves and report such conflicts by distribution.
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import pluggy

from . import hooks
from .errors import PluginConflictError, PluginError, UnknownAlgorithmError
from .model_types import AlgorithmInfo, Dataset, FitContext

ENTRY_POINT_GROUP = "sagecraft"
ALGORITHM_HOOKS = ("algorithm_info", "fit", "save_model", "load_model", "predict")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PluginSource:
    """Where a plugin came from: its entry point and the distribution that declares it."""

    name: str
    target: str
    distribution: str
    version: str

    def describe(self) -> str:
        return f"{self.distribution} {self.version} ({self.name} = {self.target})"


class Algorithm:
    """One installed algorithm: its declaration, and hook callers bound to its plugin alone."""

    def __init__(
        self, manager: pluggy.PluginManager, source: PluginSource, others: list[object]
    ) -> None:
        self.name = source.name
        self.source = source

        def caller(hook: str) -> Any:
            return manager.subset_hook_caller(hook, remove_plugins=others)

        self._infer_task = caller("infer_task")
        self._fit = caller("fit")
        self._save_model = caller("save_model")
        self._load_model = caller("load_model")
        self._predict = caller("predict")
        info = caller("algorithm_info")()
        if not isinstance(info, AlgorithmInfo):
            raise PluginError(
                f"plugin '{self.name}' ({source.describe()}): algorithm_info returned "
                f"{type(info).__name__}, not sagecraft.hooks.AlgorithmInfo"
            )
        self.info: AlgorithmInfo = info

    def infer_task(self, hyperparameters: dict[str, Any]) -> str | None:
        return self._infer_task(hyperparameters=hyperparameters)

    def fit(
        self,
        train: Dataset,
        validation: Dataset | None,
        hyperparameters: dict[str, Any],
        context: FitContext,
    ) -> Any:
        model = self._fit(
            train=train, validation=validation, hyperparameters=hyperparameters, context=context
        )
        if model is None:
            raise PluginError(f"plugin '{self.name}' returned no model from fit")
        return model

    def save_model(self, model: Any, model_dir: Path) -> None:
        self._save_model(model=model, model_dir=model_dir)

    def load_model(self, model_dir: Path) -> Any:
        model = self._load_model(model_dir=model_dir)
        if model is None:
            raise PluginError(f"plugin '{self.name}' returned no model from load_model")
        return model

    def predict(self, model: Any, features: pd.DataFrame, output: str) -> Any:
        return self._predict(model=model, features=features, output=output)


class PluginSet:
    """The loaded plugins: algorithms by name, and what could not be loaded, by name."""

    def __init__(
        self,
        manager: pluggy.PluginManager,
        algorithms: dict[str, Algorithm],
        problems: dict[str, PluginError],
    ) -> None:
        self.manager = manager
        self.algorithms = algorithms
        self.problems = problems

    def algorithm(self, name: str) -> Algorithm:
        """The algorithm registered under `name`, or an error that says what is installed."""
        found = self.algorithms.get(name)
        if found is not None:
            return found
        if name in self.problems:
            raise self.problems[name]
        installed = ", ".join(sorted(self.algorithms)) or "none"
        raise UnknownAlgorithmError(
            f"unknown algorithm '{name}'{_suggestion(name, self.algorithms)}. "
            f"Installed algorithms: {installed}"
        )


def _suggestion(name: str, names: Iterable[str]) -> str:
    from .hyperparameters import did_you_mean

    return did_you_mean(name, names)


def _source(entry_point: metadata.EntryPoint) -> PluginSource:
    dist = entry_point.dist
    return PluginSource(
        name=entry_point.name,
        target=entry_point.value,
        distribution=dist.name if dist is not None else "<unknown distribution>",
        version=dist.version if dist is not None else "?",
    )


def _unknown_hooks(manager: pluggy.PluginManager, plugin: object) -> list[str]:
    return sorted(
        caller.name for caller in manager.get_hookcallers(plugin) or () if not caller.has_spec()
    )


def build_plugin_set(entry_points: Iterable[metadata.EntryPoint]) -> PluginSet:
    """Register every entry point, set aside broken or conflicting ones, and bind algorithms."""
    manager = pluggy.PluginManager(hooks.PROJECT_NAME)
    manager.add_hookspecs(hooks)
    problems: dict[str, PluginError] = {}

    by_name: dict[str, list[metadata.EntryPoint]] = defaultdict(list)
    for entry_point in entry_points:
        by_name[entry_point.name].append(entry_point)

    registered: dict[str, tuple[object, PluginSource]] = {}
    for name, claims in sorted(by_name.items()):
        sources = [_source(ep) for ep in claims]
        if len(claims) > 1:
            claimants = " and ".join(s.describe() for s in sources)
            problems[name] = PluginConflictError(
                f"plugin name '{name}' is claimed by {claimants}; uninstall one of them"
            )
            continue
        source = sources[0]
        try:
            plugin = claims[0].load()
            manager.register(plugin, name=name)
        except Exception as exc:  # a third party's import error must not stop the others
            log.exception("plugin '%s' from %s failed to load", name, source.describe())
            problems[name] = PluginError(
                f"plugin '{name}' from {source.describe()} failed to load: "
                f"{type(exc).__name__}: {exc}"
            )
            continue
        unknown = _unknown_hooks(manager, plugin)
        if unknown:
            manager.unregister(plugin)
            problems[name] = PluginError(
                f"plugin '{name}' from {source.describe()} implements unknown hook(s) "
                f"{', '.join(unknown)}; known hooks: "
                f"{', '.join(sorted(h for h in dir(manager.hook) if not h.startswith('_')))}"
            )
            continue
        registered[name] = (plugin, source)

    algorithm_plugins: dict[str, tuple[object, PluginSource]] = {}
    for name, (plugin, source) in registered.items():
        implemented = {caller.name for caller in manager.get_hookcallers(plugin) or ()}
        if not implemented & set(ALGORITHM_HOOKS):
            continue  # an extension plugin: wrappers and the like
        missing = [hook for hook in ALGORITHM_HOOKS if hook not in implemented]
        if missing:
            manager.unregister(plugin)
            problems[name] = PluginError(
                f"plugin '{name}' from {source.describe()} is an algorithm but does not implement "
                f"{', '.join(missing)}"
            )
            continue
        algorithm_plugins[name] = (plugin, source)

    algorithms: dict[str, Algorithm] = {}
    for name, (plugin, source) in algorithm_plugins.items():
        others = [other for other, _ in algorithm_plugins.values() if other is not plugin]
        try:
            algorithms[name] = Algorithm(manager, source, others)
        except PluginError as exc:
            problems[name] = exc
        except Exception as exc:
            log.exception("plugin '%s' from %s failed to describe itself", name, source.describe())
            problems[name] = PluginError(
                f"plugin '{name}' from {source.describe()} failed in algorithm_info: {exc}"
            )
    for problem in problems.values():
        log.error("%s", problem)
    return PluginSet(manager, algorithms, problems)


@functools.lru_cache(maxsize=1)
def installed_plugins() -> PluginSet:
    """The plugins of every installed distribution's `sagecraft` entry points, built once."""
    return build_plugin_set(metadata.entry_points(group=ENTRY_POINT_GROUP))
