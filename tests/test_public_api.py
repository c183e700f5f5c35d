"""The public API is explicit: the modules the plugin guide lists declare `__all__`, export exactly
the names below, and are the only sagecraft modules the guide, the built-in plugins and the
example plugin import from (as httpx's test_exported_members checks its own)."""

from __future__ import annotations

import ast
import importlib
import re

import pytest

from sagemaker_tree import REPO

GUIDE = (REPO / "docs" / "plugins.md").read_text()

EXPORTED = {
    "sagecraft.hooks": {
        "CLASSIFICATION", "CONTRIBUTIONS", "HOOK_API_VERSION", "LABEL", "LEAVES", "PROBABILITIES",
        "RAW_MARGIN", "REGRESSION", "AlgorithmInfo", "Batch", "BatchStream", "ContentTypeRegistry",
        "Dataset", "FitContext", "Hyperparameter", "ReportSection", "hookimpl", "hookspec",
    },
    "sagecraft.model_types": {
        "CLASSIFICATION", "CONTRIBUTIONS", "LABEL", "LEAVES", "PROBABILITIES", "RAW_MARGIN",
        "REGRESSION", "TASKS", "AlgorithmInfo", "Batch", "BatchStream", "Dataset", "FitContext",
        "MetricsSink", "ReportSection",
    },
    "sagecraft.errors": {
        "SagecraftError", "PluginError", "UnknownAlgorithmError", "PluginConflictError", "TrainingError",
        "ConfigurationError", "HyperparameterError", "DataError", "UnservableModelError",
        "TrainingStoppedError", "DataTooLargeError", "OutputWriteError", "ModelLoadError", "RequestError",
        "BadRequestError", "UnsupportedOutputError", "NotAcceptableError", "PayloadTooLargeError",
        "TooManyRowsError", "DecodedTooLargeError", "RequestTimeoutError", "PredictionTimeoutError",
        "UnsupportedMediaTypeError", "ModelNotFoundError", "ModelAlreadyLoadedError",
        "InsufficientMemoryError", "ModelLoadTimeoutError", "NotReadyError", "OverloadedError",
        "ClusterError", "ModelCrashedError", "ForwardedError",
    },
    "sagecraft.cluster": {"Cluster"},
    "sagecraft.checkpoints": {"CheckpointFolder"},
    "sagecraft.conformance": {"CHECKS", "CheckResult", "assert_conforms", "check"},
    "sagecraft.local_cluster": {"HostRun", "LocalCluster", "Running"},
    "sagecraft.testing": {"Answer", "Endpoint", "load", "serve", "train", "write_training_job"},
    "sagecraft.hyperparameters": {"Hyperparameter", "did_you_mean", "string_list"},
    "sagecraft.files": {
        "MAX_MODEL_FILE_SETTING", "describe_kind", "max_model_file_bytes", "read_model_file", "read_regular",
    },
    "sagecraft.flat_trees": {"FlatTrees", "TreeNodes", "check_values"},
    "sagecraft.categories": {"FeatureNames", "code_matrix", "numeric_matrix"},
    "sagecraft.progress": {"QUIET_S", "FitProgress"},
    "sagecraft.metrics": {
        "DEFAULT_METRIC", "HIGHER_IS_BETTER", "METRICS", "Metric", "Statistics", "check_metric_names",
        "evaluate",
    },
    "sagecraft.manifest": {"MANIFEST_FILE", "Feature", "Manifest", "runtime_libraries"},
    "sagecraft.content_registry": {
        "SMALL_BODY_BYTES", "ContentTypeRegistry", "Decoder", "Encoder", "LineDecoder", "NumberReader",
        "NumberRows",
    },
    "sagecraft.media_types": {
        "ALIASES", "CSV", "JSON", "JSONLINES", "LIBSVM", "NPY", "PARQUET", "RECORDIO", "MediaType",
        "canonical",
        "media_type", "parse", "short_name",
    },
}  # fmt: skip


def _guide_modules() -> set[str]:
    section = GUIDE.split("## The public API", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^- `(sagecraft\.\w+)`", section, flags=re.M))


def test_the_guide_lists_exactly_the_public_modules() -> None:
    assert _guide_modules() == set(EXPORTED)


@pytest.mark.parametrize("module_name", sorted(EXPORTED))
def test_exported_members(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{module_name} declares no __all__"
    assert len(exported) == len(set(exported)), f"{module_name}.__all__ names a member twice"
    assert set(exported) == EXPORTED[module_name]
    for name in exported:
        assert hasattr(module, name), f"{module_name}.__all__ names {name}, which it does not define"


def _sagecraft_imports(source: str) -> list[tuple[str, list[str]]]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "sagecraft":
            found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((a.name, []) for a in node.names if a.name.split(".")[0] == "sagecraft")
    return found


def _code_blocks(markdown: str) -> str:
    return "\n".join(re.findall(r"```python\n(.*?)```", markdown, flags=re.S))


def test_plugins_and_the_guide_use_only_exported_names() -> None:
    sources = {str(path.relative_to(REPO)): path.read_text() for path in (REPO / "plugins").rglob("*.py")}
    for path in (REPO / "examples").rglob("*.py"):
        sources[str(path.relative_to(REPO))] = path.read_text()
    sources["docs/plugins.md"] = _code_blocks(GUIDE)
    offenders = []
    for where, source in sources.items():
        for module, names in _sagecraft_imports(source):
            if module not in EXPORTED:
                offenders.append(f"{where}: imports {module}, not a public module")
                continue
            offenders += [
                f"{where}: {module}.{n} is not in __all__" for n in names if n not in EXPORTED[module]
            ]
    mentioned = set(re.findall(r"`(sagecraft\.[a-z_]+)[`.(]", GUIDE)) - {"sagecraft.cli"}
    offenders += [f"docs/plugins.md mentions {m}, not a public module" for m in mentioned - set(EXPORTED)]
    assert not offenders, "\n".join(offenders)
