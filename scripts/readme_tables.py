"""Regenerate the hyperparameter tables in README.md from the plugins' declarations.

python3 scripts/readme_tables.py          # rewrite README.md
python3 scripts/readme_tables.py --check  # exit 1 if README.md is out of date
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = re.compile(r"(<!-- hyperparameters:(\S+) -->\n)(.*?)(<!-- /hyperparameters -->)", re.S)


def table(algorithm: str) -> str:
    return subprocess.run(
        ["sagecraft", "hyperparameters", algorithm], capture_output=True, text=True, check=True
    ).stdout


def regenerated(text: str) -> str:
    return SECTION.sub(lambda m: m.group(1) + table(m.group(2)) + m.group(4), text)


def main() -> int:
    current = README.read_text()
    updated = regenerated(current)
    if "--check" in sys.argv:
        return 0 if updated == current else 1
    README.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
