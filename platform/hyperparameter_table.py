"""Render an algorithm's declared hyperparameters as the Markdown table the README shows."""

from __future__ import annotations

from collections.abc import Sequence

from .hyperparameters import Hyperparameter


def _allowed(declaration: Hyperparameter) -> str:
    if declaration.choices is not None:
        return ", ".join(str(c) for c in declaration.choices)
    if declaration.minimum is None and declaration.maximum is None:
        return ""
    return declaration.range_text()


def markdown_table(declarations: Sequence[Hyperparameter]) -> str:
    """One row per hyperparameter: name, aliases, type, default, allowed values, meaning."""
    rows = ["| name | aliases | type | default | allowed | meaning |", "|---|---|---|---|---|---|"]
    for d in declarations:
        aliases = ", ".join(f"`{a}`" for a in d.aliases)
        default = "required" if d.required else ("" if d.default is None else f"`{d.default}`")
        rows.append(f"| `{d.name}` | {aliases} | {d.type_name} | {default} | {_allowed(d)} | {d.help} |")
    return "\n".join(rows)
