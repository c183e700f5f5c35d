"""The README's promises that code can check: the two commands, CI, and the generated tables."""

from __future__ import annotations

import subprocess
import sys

from sagemaker_tree import REPO

README = (REPO / "README.md").read_text()


def _commands() -> list[str]:
    block = README.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second() -> None:
    install_and_run, install_and_test = _commands()
    assert README.index("```bash") < 200
    assert "demo/run.py" in install_and_run
    assert "pytest" in install_and_test
    assert install_and_test in (REPO / ".ci" / "run").read_text().splitlines()


def test_hyperparameter_tables_match_the_plugins_declarations() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "readme_tables.py"), "--check"], check=False
    )
    assert result.returncode == 0, "README.md is stale: run python3 scripts/readme_tables.py"


def test_every_environment_variable_read_is_in_the_table() -> None:
    import re

    read = set()
    for path in (REPO / "platform").rglob("*.py"):
        read |= set(re.findall(r'"((?:SAGEMAKER|SAGECRAFT)_[A-Z_]+)"', path.read_text()))
    table = README.split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    missing = {name for name in read if f"`{name}`" not in table}
    assert not missing, f"variables read but not documented: {sorted(missing)}"


def test_the_layout_table_names_every_module() -> None:
    """One line a module in platform/ (a plugin's modules may share its folder's line)."""
    table = README.split("## Layout", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    unlisted = []
    for path in sorted((REPO / "platform").rglob("*.py")):
        if path.name == "__init__.py":
            continue
        relative = path.relative_to(REPO).as_posix()
        short = f"`{path.name}`"
        if not any(
            f"`{relative}`" in row
            or (short in row and row.startswith(f"| `{path.parent.relative_to(REPO).as_posix()}/"))
            for row in rows
        ):
            unlisted.append(relative)
    for path in sorted((REPO / "plugins").rglob("*.py")):
        folder = f"`{path.parent.relative_to(REPO).as_posix()}/`"
        if path.name != "__init__.py" and not any(folder in row and f"`{path.name}`" in row for row in rows):
            unlisted.append(path.relative_to(REPO).as_posix())
    assert not unlisted, f"modules missing from the README's Layout table: {unlisted}"
