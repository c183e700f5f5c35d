"""The example third-party plugin, installed from its wheel, trained and served by real processes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from sagemaker_tree import REPO, Server, TrainingTree, iris_tree

EXAMPLE = REPO / "examples" / "sagecraft-linear"


@pytest.fixture(scope="module")
def example_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment holding the example's wheel; sagecraft and its dependencies come from
    the running environment (system site packages)."""
    root = tmp_path_factory.mktemp("example")
    # Built from a copy: setuptools builds in the source folder, and the suite's processes may
    # build it at the same time.
    source = shutil.copytree(EXAMPLE, root / "source", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(root / "dist"), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next((root / "dist").glob("sagecraft_linear-*.whl"))
    env_dir = root / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    subprocess.run(
        [str(env_dir / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return env_dir


def _sagecraft(env_dir: Path) -> list[str]:
    return [str(env_dir / "bin" / "python"), "-m", "sagecraft.cli"]


@pytest.mark.slow
def test_example_plugin_trains_and_serves_from_its_wheel(example_env: Path, tmp_path: Path) -> None:
    tree = iris_tree(tmp_path, {"algorithm": "linear", "target": "Species", "C": 10})
    tree.command = _sagecraft(example_env)
    result = tree.train()
    assert result.returncode == 0, tree.explain()
    assert "train-accuracy:" in result.stdout
    manifest = json.loads((tree.model_dir / "manifest.json").read_text())
    assert manifest["plugin"]["distribution"] == "sagecraft-linear"
    assert (tree.model_dir / "linear-model.json").is_file()

    server = Server(tree.base, command=_sagecraft(example_env)).wait_ready()
    try:
        answer = server.invoke("5.0,3.4,1.5,0.2\n6.6,3.0,5.6,2.0", accept="application/json")
        assert answer.json() == {"predictions": ["setosa", "virginica"]}
        assert server.invoke("1,2").status_code == 400
    finally:
        server.stop()


@pytest.mark.slow
def test_example_plugin_serves_beside_the_built_ins_in_a_multi_model_endpoint(
    example_env: Path, iris_forest: TrainingTree, iris_xgboost: TrainingTree, tmp_path: Path
) -> None:
    tree = iris_tree(tmp_path / "linear", {"algorithm": "linear", "target": "Species"})
    tree.command = _sagecraft(example_env)
    assert tree.train().returncode == 0, tree.explain()
    models = {"linear": tree.model_dir, "forest": iris_forest.model_dir, "xgboost": iris_xgboost.model_dir}
    for name, folder in models.items():
        shutil.copytree(folder, tmp_path / "models" / name / "model")
    server = Server(tmp_path, command=_sagecraft(example_env), SAGEMAKER_MULTI_MODEL="true").wait_ready()
    try:
        for name in models:
            loaded = server.session.post(
                f"{server.url}/models",
                json={"model_name": name, "url": str(tmp_path / "models" / name / "model")},
            )
            assert loaded.status_code == 200, loaded.text
        for name in models:
            answer = server.session.post(
                f"{server.url}/models/{name}/invoke",
                data="6.6,3.0,5.6,2.0",
                headers={"Content-Type": "text/csv"},
            )
            assert answer.text == "virginica\n", (name, answer.text)
    finally:
        server.stop()


@pytest.mark.slow
def test_example_plugin_conforms(example_env: Path, tmp_path: Path) -> None:
    """The conformance suite every plugin can run against itself (sagecraft.conformance)."""
    from sagecraft.conformance import assert_conforms

    assert_conforms("linear", tmp_path, command=_sagecraft(example_env))


@pytest.mark.slow
def test_example_plugin_own_tests_pass_when_installed(example_env: Path) -> None:
    result = subprocess.run(
        [
            str(example_env / "bin" / "python"),
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(EXAMPLE / "test_sagecraft_linear.py"),
        ],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 passed" in result.stdout


def test_example_plugin_folder_holds_its_module_pyproject_test_and_readme() -> None:
    files = sorted(p.name for p in EXAMPLE.iterdir() if p.is_file())
    assert files == ["README.md", "pyproject.toml", "sagecraft_linear.py", "test_sagecraft_linear.py"]
    assert 'linear = "sagecraft_linear"' in (EXAMPLE / "pyproject.toml").read_text()
