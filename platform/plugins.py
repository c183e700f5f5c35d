"""Build the plugin manager once: load entry points, check them, and hand out one algorithm.

Design: every algorithm plugin implements the same hooks (`fit`, `predict`, ...). Rather than
making each implementation check whether a call is meant for it, `Algorithm` holds pluggy
*subset hook callers* that leave out every other algorithm plugin. Plugins that implement no
algorithm hook (codecs, wrappers for timing or logging, training observers) stay in every subset,
so their wrappers still run around the selected algorithm's calls.

pluggy's own `load_setuptools_entrypoints` silently skips an entry point whose name is already
registered, so a second distribution claiming `xgboost` would vanish without a word; we read the
entry points ourselves and report such conflicts by distribution. A plugin that fails to import,
implements an unknown hook or breaks a rule is set aside with a message; the others keep working.
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import pluggy

from . import hooks
from .content_registry import ContentTypeRegistry
from .environment import OUTPUT_KINDS, PluginSettings
from .errors import PluginConflictError, PluginError, UnknownAlgorithmError
from .hyperparameters import did_you_mean
from .manifest import Manifest, sagecraft_version
from .model_types import AlgorithmInfo, Dataset, FitContext
from .serving import codecs

ENTRY_POINT_GROUP = "sagecraft"
CORE_PLUGIN = "sagecraft"
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


@dataclass
class PluginRecord:
    """A registered plugin, for `sagecraft plugins`: where it came from and what it provides."""

    source: PluginSource
    hooks: list[str]
    algorithm: bool = False
    content_types: list[str] = field(default_factory=list)


class Algorithm:
    """One installed algorithm: its declaration, and hook callers bound to its plugin alone."""

    def __init__(self, manager: pluggy.PluginManager, source: PluginSource, others: list[object]) -> None:
        self.name = source.name
        self.source = source

        def caller(hook: str) -> Any:
            return manager.subset_hook_caller(hook, remove_plugins=others)

        self._infer_task = caller("infer_task")
        self._fit = caller("fit")
        self._save_model = caller("save_model")
        self._load_model = caller("load_model")
        self._predict = caller("predict")
        self._describe_model = caller("describe_model")
        self._builtin_default_output = caller("builtin_default_output")
        info = caller("algorithm_info")()
        if not isinstance(info, AlgorithmInfo):
            raise PluginError(
                f"plugin '{self.name}' ({source.describe()}): algorithm_info returned "
                f"{type(info).__name__}, not sagecraft.hooks.AlgorithmInfo"
            )
        if info.api_version > hooks.HOOK_API_VERSION:
            raise PluginError(
                f"plugin '{self.name}' ({source.describe()}) needs hook API version "
                f"{info.api_version}; this sagecraft provides {hooks.HOOK_API_VERSION}: upgrade sagecraft"
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
        if model is None and context.cluster.is_leader:
            raise PluginError(f"plugin '{self.name}' returned no model from fit")
        return model

    def save_model(self, model: Any, model_dir: Path) -> None:
        self._save_model(model=model, model_dir=model_dir)

    def load_model(self, model_dir: Path, manifest: Manifest | None = None) -> Any:
        model = self._load_model(model_dir=model_dir, manifest=manifest)
        if model is None:
            raise PluginError(f"plugin '{self.name}' returned no model from load_model")
        return model

    def predict(self, model: Any, features: pd.DataFrame, output: str) -> Any:
        return self._predict(model=model, features=features, output=output)

    def builtin_default_output(self, model: Any, manifest: Manifest) -> str | None:
        """The built-in algorithm's default output kind for this model, or None (see the hook)."""
        kind = self._builtin_default_output(model=model, manifest=manifest)
        if kind is not None and kind not in OUTPUT_KINDS:
            raise PluginError(
                f"plugin '{self.name}': builtin_default_output returned {kind!r}, not one of "
                f"{', '.join(OUTPUT_KINDS)}"
            )
        return kind

    def describe_model(self, model_dir: Path) -> Manifest | None:
        """The plugin's manifest for a folder without one, or None when it is not the plugin's."""
        manifest = self._describe_model(model_dir=model_dir)
        if manifest is not None and (not isinstance(manifest, Manifest) or manifest.algorithm != self.name):
            raise PluginError(
                f"plugin '{self.name}': describe_model returned {type(manifest).__name__} for "
                f"algorithm '{getattr(manifest, 'algorithm', '?')}', not a Manifest of its own"
            )
        return manifest


class PluginSet:
    """The loaded plugins: algorithms by name, content types, what could not be loaded, and the
    training hooks, called here as the algorithm hooks are called on `Algorithm`."""

    def __init__(
        self,
        manager: pluggy.PluginManager,
        algorithms: dict[str, Algorithm],
        records: dict[str, PluginRecord],
        content_types: ContentTypeRegistry,
        problems: dict[str, PluginError],
    ) -> None:
        self.manager = manager
        self.algorithms = algorithms
        self.records = records
        self.content_types = content_types
        self.problems = problems

    def training_started(
        self, *, algorithm: str, hyperparameters: dict[str, Any], output_data_dir: Path
    ) -> None:
        """The `training_started` hook, on every plugin that implements it."""
        self.manager.hook.training_started(
            algorithm=algorithm, hyperparameters=hyperparameters, output_data_dir=output_data_dir
        )

    def training_finished(
        self, *, algorithm: str, model_dir: Path, output_data_dir: Path, manifest: dict[str, Any]
    ) -> None:
        """The `training_finished` hook, on every plugin that implements it."""
        self.manager.hook.training_finished(
            algorithm=algorithm, model_dir=model_dir, output_data_dir=output_data_dir, manifest=manifest
        )

    def describe_model(self, model_dir: Path) -> Manifest | None:
        """A manifest for a model folder without one, from the first algorithm (by name) whose
        plugin recognises the folder (`describe_model` hook); None when none does."""
        for name in sorted(self.algorithms):
            manifest = self.algorithms[name].describe_model(model_dir)
            if manifest is not None:
                return manifest
        return None

    def algorithm(self, name: str) -> Algorithm:
        """The algorithm registered under `name`, or an error that says what is installed."""
        found = self.algorithms.get(name)
        if found is not None:
            return found
        if name in self.problems:
            raise self.problems[name]
        installed = ", ".join(sorted(self.algorithms)) or "none"
        raise UnknownAlgorithmError(
            f"unknown algorithm '{name}'{did_you_mean(name, self.algorithms)}. "
            f"Installed algorithms: {installed}"
        )


def _source(entry_point: metadata.EntryPoint) -> PluginSource:
    dist = entry_point.dist
    return PluginSource(
        name=entry_point.name,
        target=entry_point.value,
        distribution=dist.name if dist is not None else "<unknown distribution>",
        version=dist.version if dist is not None else "?",
    )


def _implemented(manager: pluggy.PluginManager, plugin: object) -> dict[str, bool]:
    """Hook name -> True when the plugin implements it plainly, False when only as a wrapper."""
    found: dict[str, bool] = {}
    for caller in manager.get_hookcallers(plugin) or ():
        for impl in caller.get_hookimpls():
            if impl.plugin is plugin:
                plain = not (impl.wrapper or impl.hookwrapper)
                found[caller.name] = found.get(caller.name, False) or plain
    return found


class _Builder:
    """Registers plugins one by one; whatever one plugin does wrong is recorded against it."""

    def __init__(self, settings: PluginSettings) -> None:
        self.settings = settings
        self.manager = pluggy.PluginManager(hooks.PROJECT_NAME)
        self.manager.add_hookspecs(hooks)
        self.problems: dict[str, PluginError] = {}
        self.records: dict[str, PluginRecord] = {}
        self.plugins: dict[str, object] = {}
        if settings.trace_hooks:
            tracer = logging.getLogger("sagecraft.hooks.trace")
            self.manager.trace.root.setwriter(lambda message: tracer.info("%s", message.rstrip()))
            self.manager.enable_tracing()

    def register(self, plugin: object, source: PluginSource) -> None:
        name = source.name
        try:
            self.manager.register(plugin, name=name)
        except Exception as exc:
            self.problems[name] = PluginError(f"plugin '{name}' from {source.describe()}: {exc}")
            return
        implemented = _implemented(self.manager, plugin)
        unknown = sorted(h for h in implemented if not getattr(self.manager.hook, h).has_spec())
        if unknown:
            self.manager.unregister(plugin)
            known = ", ".join(hook_names())
            self.problems[name] = PluginError(
                f"plugin '{name}' from {source.describe()} implements unknown hook(s) "
                f"{', '.join(unknown)}; known hooks: {known}"
            )
            return
        is_algorithm = implemented.get("fit", False)
        missing = [h for h in ALGORITHM_HOOKS if not implemented.get(h)]
        if is_algorithm and missing:
            self.manager.unregister(plugin)
            self.problems[name] = PluginError(
                f"plugin '{name}' from {source.describe()} implements fit but not {', '.join(missing)}"
            )
            return
        self.plugins[name] = plugin
        self.records[name] = PluginRecord(source, sorted(implemented), algorithm=is_algorithm)

    def load_entry_points(self, entry_points: Iterable[metadata.EntryPoint]) -> None:
        by_name: dict[str, list[metadata.EntryPoint]] = defaultdict(list)
        for entry_point in entry_points:
            by_name[entry_point.name].append(entry_point)
        for name, claims in sorted(by_name.items()):
            if self.settings.only is not None and name not in self.settings.only:
                continue
            sources = [_source(ep) for ep in claims]
            if len(claims) > 1 or name == CORE_PLUGIN:
                claimants = " and ".join(s.describe() for s in sources)
                self.problems[name] = PluginConflictError(
                    f"plugin name '{name}' is claimed by {claimants}"
                    + (" and by sagecraft itself" if name == CORE_PLUGIN else "")
                    + "; uninstall one of them"
                )
                continue
            try:
                plugin = claims[0].load()
            except Exception as exc:  # a third party's import error must not stop the others
                log.debug("plugin '%s' failed to import", name, exc_info=True)
                self.problems[name] = PluginError(
                    f"plugin '{name}' from {sources[0].describe()} failed to load: "
                    f"{type(exc).__name__}: {exc}"
                )
                continue
            self.register(plugin, sources[0])

    def content_types(self) -> ContentTypeRegistry:
        registry = ContentTypeRegistry()
        everyone = list(self.plugins.values())
        for name, plugin in self.plugins.items():
            if "register_content_types" not in self.records[name].hooks:
                continue
            others = [p for p in everyone if p is not plugin]
            caller = self.manager.subset_hook_caller("register_content_types", remove_plugins=others)
            try:
                caller(registry=registry.registering_for(name))
            except PluginError as exc:
                self.problems[name] = exc
            except Exception as exc:
                self.problems[name] = PluginError(
                    f"plugin '{name}' failed in register_content_types: {type(exc).__name__}: {exc}"
                )
            self.records[name].content_types = registry.providers.get(name, [])
        return registry

    def algorithms(self) -> dict[str, Algorithm]:
        candidates = {n: p for n, p in self.plugins.items() if self.records[n].algorithm}
        algorithms: dict[str, Algorithm] = {}
        for name, plugin in candidates.items():
            others = [other for other in candidates.values() if other is not plugin]
            try:
                algorithms[name] = Algorithm(self.manager, self.records[name].source, others)
            except PluginError as exc:
                self.problems[name] = exc
            except Exception as exc:
                self.problems[name] = PluginError(
                    f"plugin '{name}' from {self.records[name].source.describe()} failed in "
                    f"algorithm_info: {type(exc).__name__}: {exc}"
                )
        return algorithms


def build_plugin_set(
    entry_points: Iterable[metadata.EntryPoint], settings: PluginSettings | None = None
) -> PluginSet:
    """Register sagecraft's own codecs, then every entry point; bind algorithms and content types."""
    builder = _Builder(settings or PluginSettings(only=None, trace_hooks=False))
    builder.register(
        codecs, PluginSource(CORE_PLUGIN, "sagecraft.serving.codecs", "sagecraft", sagecraft_version())
    )
    builder.load_entry_points(entry_points)
    content_types = builder.content_types()
    algorithms = builder.algorithms()
    for problem in builder.problems.values():
        log.error("%s", problem)
    return PluginSet(builder.manager, algorithms, builder.records, content_types, builder.problems)


def hook_names() -> list[str]:
    """The names of every hook specification, in alphabetical order."""
    marker = f"{hooks.PROJECT_NAME}_spec"
    return sorted(name for name, value in vars(hooks).items() if hasattr(value, marker))


@functools.lru_cache(maxsize=1)
def installed_plugins() -> PluginSet:
    """The plugins of every installed distribution's `sagecraft` entry points, built once.

    SAGECRAFT_PLUGINS=a,b loads only the named entry points; SAGECRAFT_TRACE_HOOKS=true logs
    every hook call.
    """
    return build_plugin_set(metadata.entry_points(group=ENTRY_POINT_GROUP), PluginSettings.from_environment())
