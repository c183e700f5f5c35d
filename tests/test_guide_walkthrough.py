"""The plugin guide's walk-through, followed as written: its three files make a plugin, installed
in a virtual environment of its own, whose test (the conformance suite, through the real
processes) passes; then the guide's local-run script trains, serves and answers with it."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import venv
from pathlib import Path

import pytest

from sagemaker_tree import REPO

pytestmark = pytest.mark.slow

GUIDE = (REPO / "docs" / "plugins.md").read_text()
FILE = re.compile(r"<!-- walk-through file: (\S+) -->\n```\w+\n(.*?)```", re.S)
SCRIPT = re.compile(r"<!-- walk-through script -->\n```sh\n(.*?)```", re.S)


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The walk-through's folder, and a virtual environment with its plugin installed (`pip
    install -e .`, as the guide says). sagecraft comes from the running environment (system site
    packages) rather than `pip install /path/to/sagecraft`, which would download every dependency
    again; a `sagecraft` command in the environment's bin stands for the one that install makes."""
    root = tmp_path_factory.mktemp("walk-through")
    folder = root / "sagecraft-knn"
    folder.mkdir()
    files = dict(FILE.findall(GUIDE))
    assert set(files) == {"pyproject.toml", "sagecraft_knn.py", "test_sagecraft_knn.py"}
    for name, text in files.items():
        (folder / name).write_text(text)
    env_dir = root / "plugin-env"
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    command = env_dir / "bin" / "sagecraft"
    command.write_text(f'#!/bin/sh\nexec "{env_dir / "bin" / "python"}" -m sagecraft.cli "$@"\n')
    command.chmod(0o755)
    subprocess.run(
        [str(env_dir / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps", "-e", "."],
        cwd=folder,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return folder, env_dir


def _environment(env_dir: Path, **extra: str) -> dict[str, str]:
    path = f"{env_dir / 'bin'}{os.pathsep}{os.environ['PATH']}"
    env = {k: v for k, v in os.environ.items() if k not in ("SAGEMAKER_BASE_DIR", "PYTHONPATH")}
    return {**env, "PATH": path, "VIRTUAL_ENV": str(env_dir), **extra}


def test_the_walk_through_plugin_passes_its_test(plugin_env: tuple[Path, Path]) -> None:
    folder, env_dir = plugin_env
    result = subprocess.run(
        [
            str(env_dir / "bin" / "python"),
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "test_sagecraft_knn.py",
        ],
        cwd=folder,
        env=_environment(env_dir),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout


def test_the_local_run_script_trains_serves_and_answers(
    plugin_env: tuple[Path, Path], tmp_path: Path
) -> None:
    _, env_dir = plugin_env
    (script,) = SCRIPT.findall(GUIDE)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=tmp_path,
        env=_environment(env_dir, PORT=str(port), SAGECRAFT_TRAINING_REPORT="true"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "\nsetosa\n" in result.stdout  # the answer, CSV as the question was
    assert sorted(p.name for p in (tmp_path / "ml" / "model").iterdir()) == [
        "knn-model.json",
        "manifest.json",
    ]
    assert (tmp_path / "ml" / "output" / "data" / "report" / "report.html").is_file()
