"""The wheel, a fresh virtual environment, the import names, and lint: the layout stays honest."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from sagemaker_tree import REPO


def test_standard_platform_module_is_not_shadowed_from_the_repository_root() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import platform; print(platform.system(), platform.__file__)"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert not (REPO / "platform" / "__init__.py").exists()
    assert str(REPO) not in result.stdout


def test_ruff_is_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", str(REPO)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", str(REPO)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, "run `ruff format`:\n" + result.stdout + result.stderr


@pytest.mark.slow
def test_mypy_is_clean() -> None:
    """The package ships py.typed, so its types must hold: the core and both plugins, as
    installed (pyproject.toml's [tool.mypy] names the packages)."""
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml")],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return next(out.glob("sagecraft-*.whl"))


@pytest.mark.slow
def test_wheel_holds_the_three_packages_and_nothing_that_shadows(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"sagecraft", "sagecraft_random_forest", "sagecraft_xgboost"}
    assert "sagecraft/hooks.py" in names and "sagecraft/server.py" in names
    assert "sagecraft_xgboost/algorithm.py" in names
    assert not any(name.startswith(("platform/", "xgboost/", "tests/")) for name in names)
    # Every file of the source tree ships: a package left out of pyproject.toml's list fails here.
    folders = {"platform": "sagecraft", "plugins/random_forest": "sagecraft_random_forest",
               "plugins/xgboost": "sagecraft_xgboost"}  # fmt: skip
    shipped = {
        f"{package}/{path.relative_to(REPO / folder).as_posix()}"
        for folder, package in folders.items()
        for path in (REPO / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert shipped - set(names) == set()
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[sagecraft]" in text and "random_forest = sagecraft_random_forest" in text
    assert "sagecraft = sagecraft.cli:main" in text


@pytest.mark.slow
def test_installed_wheel_finds_both_plugins_through_entry_points(wheel: Path, tmp_path: Path) -> None:
    # The dependencies come from the running environment; the package itself only from the wheel.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    probe = (
        "import sagecraft.hooks, sagecraft_xgboost\n"
        "from sagecraft.plugins import installed_plugins\n"
        "plugins = installed_plugins()\n"
        "print(sorted(plugins.algorithms), plugins.problems)\n"
        "print(sagecraft.hooks.__file__)\n"
        "print(sagecraft_xgboost.__file__)\n"
    )
    result = subprocess.run(
        [str(python), "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    algorithms, hooks_file, plugin_file = result.stdout.splitlines()
    assert algorithms == "['random_forest', 'xgboost'] {}"
    assert hooks_file.startswith(str(env_dir)), hooks_file
    assert plugin_file.startswith(str(env_dir)), plugin_file
    listing = subprocess.run(
        [str(env_dir / "bin" / "sagecraft"), "plugins"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "random_forest" in listing and "xgboost" in listing


def test_other_commands_are_executed_as_given(tmp_path: Path) -> None:
    """`docker run IMAGE bash -c ...` must run that command, as the contract allows."""
    from sagemaker_tree import SAGECRAFT, environment

    result = subprocess.run(
        [*SAGECRAFT, "sh", "-c", "echo ran $0", "here"],
        env=environment(tmp_path),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and result.stdout == "ran here\n"
    missing = subprocess.run(
        [*SAGECRAFT, "no-such-command"],
        env=environment(tmp_path),
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2
    assert "use one of: train, serve" in missing.stderr
