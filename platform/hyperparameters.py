"""Hyperparameters: decode SageMaker's two string encodings, and validate against a declaration.

SageMaker hands every value over as a string. The generic `Estimator` sends `str(v)` ("5", "0.1",
"True", "binary:logistic"); framework estimators send `json.dumps(v)` ("\"binary:logistic\"",
"true", "null"). `decode` turns either into Python values; `validate` then checks names, types and
ranges against what the algorithm plugin declares with `Hyperparameter`.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import HyperparameterError

__all__ = [
    "Hyperparameter",
    "did_you_mean",
    "string_list",
]

RESERVED_PREFIX = "sagemaker_"
TUNING_OBJECTIVE_KEY = "_tuning_objective_metric"
_PYTHON_LITERALS = {"True": True, "False": False, "None": None}


def decode_value(raw: object) -> Any:
    """One value as SageMaker wrote it: JSON if it parses as JSON, else the raw string."""
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    if text in _PYTHON_LITERALS:
        return _PYTHON_LITERALS[text]
    try:
        return json.loads(text)
    except ValueError:
        return raw


@dataclass(frozen=True)
class DecodedHyperparameters:
    """The user's hyperparameters with SageMaker's reserved keys taken out."""

    values: dict[str, Any]
    tuning_objective_metric: str | None = None


MAX_NAME_CHARS = 256  # SageMaker's own limit on a hyperparameter's name
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def decode(raw: Mapping[str, object]) -> DecodedHyperparameters:
    """Decode hyperparameters.json; drop `sagemaker_*` keys, keep the tuning objective aside.
    HyperparameterError for a name no SageMaker job could send (control characters, over 256
    characters): such a name would be echoed into logs and messages."""
    if not isinstance(raw, Mapping):
        raise HyperparameterError("hyperparameters.json must hold a JSON object of name: value")
    values: dict[str, Any] = {}
    objective = None
    for name, value in raw.items():
        if _CONTROL.search(name) or len(name) > MAX_NAME_CHARS:
            raise HyperparameterError(
                f"hyperparameter name {name[:60]!a} is not a name: names are at most "
                f"{MAX_NAME_CHARS} printable characters"
            )
        if name == TUNING_OBJECTIVE_KEY:
            objective = str(decode_value(value))
        elif not name.startswith(RESERVED_PREFIX):
            values[name] = decode_value(value)
    return DecodedHyperparameters(values, objective)


@dataclass(frozen=True)
class Hyperparameter:
    """A hyperparameter an algorithm declares: the core validates users' values against it.

    `type` is one of int, float, str, bool, or a function that takes the decoded value and
    returns the converted one (raising ValueError with a message on a bad value). `minimum` and
    `maximum` are inclusive bounds (use `exclusive_minimum` for "greater than"); `choices` lists
    the allowed values; `aliases` are other names users may know it by (for example R's `ntree`).
    A `default` of None means "not set": the key is then absent from what `fit` receives.
    """

    name: str
    type: type | Callable[[Any], Any]
    help: str
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    choices: Sequence[Any] | None = None
    aliases: Sequence[str] = field(default_factory=tuple)
    required: bool = False

    @property
    def type_name(self) -> str:
        return str(getattr(self.type, "type_name", None) or getattr(self.type, "__name__", "value"))

    def convert(self, value: Any, spelled: str | None = None) -> Any:
        """The value in this declaration's type, or HyperparameterError naming the problem.

        `spelled` is the name the user wrote (an alias, say), used in the message.
        """
        label = f"'{self.name}'" if spelled in (None, self.name) else f"'{spelled}' ('{self.name}')"
        try:
            converted = _CONVERTERS.get(self.type, self.type)(value)
        except (TypeError, ValueError) as exc:
            detail = f": {exc}" if str(exc) else ""
            raise HyperparameterError(
                f"hyperparameter {label} = {value!r} is not a valid {self.type_name}{detail}"
            ) from None
        self._check_range(converted, label)
        return converted

    def _check_range(self, value: Any, label: str) -> None:
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(str(c) for c in self.choices)
            raise HyperparameterError(
                f"hyperparameter {label} = {value!r} is not allowed; choose one of: {allowed}"
            )
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return
        low_ok = self.minimum is None or (
            value > self.minimum if self.exclusive_minimum else value >= self.minimum
        )
        high_ok = self.maximum is None or value <= self.maximum
        if not (low_ok and high_ok):
            raise HyperparameterError(
                f"hyperparameter {label} = {value!r} is out of range; it must be {self.range_text()}"
            )

    def range_text(self) -> str:
        low = "" if self.minimum is None else f"{'>' if self.exclusive_minimum else '>='} {self.minimum:g}"
        high = "" if self.maximum is None else f"<= {self.maximum:g}"
        return " and ".join(p for p in (low, high) if p) or "any value"


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a whole number, not a boolean")
    if isinstance(value, str):
        value = float(value.strip())
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("expected a whole number")
        return int(value)
    if isinstance(value, int):
        return value
    raise ValueError("expected a whole number")


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number, not a boolean")
    if isinstance(value, (str, int, float)):
        number = float(value)
        if math.isnan(number):
            raise ValueError("NaN is not allowed")
        return number
    raise ValueError("expected a number")


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"true", "1", "yes", "t"}:
        return True
    if text in {"false", "0", "no", "f"}:
        return False
    raise ValueError("expected true or false")


def _to_str(value: Any) -> str:
    if isinstance(value, (dict, list)):
        raise ValueError("expected a single value")
    return value if isinstance(value, str) else json.dumps(value)


_CONVERTERS: dict[Any, Callable[[Any], Any]] = {
    int: _to_int,
    float: _to_float,
    bool: _to_bool,
    str: _to_str,
}


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """A " (did you mean 'X'?)" suffix for a misspelt name, or ''."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


@dataclass(frozen=True)
class ValidatedHyperparameters:
    """Declared values under their canonical names, and undeclared ones passed through as given."""

    values: dict[str, Any]
    extra: dict[str, Any]


def validate(
    given: Mapping[str, Any],
    declared: Sequence[Hyperparameter],
    *,
    accept_extra: bool = False,
    owner: str = "this algorithm",
    also_known: Sequence[str] = (),
) -> ValidatedHyperparameters:
    """Check `given` against `declared`: canonical names, converted types, defaults filled in.

    Unknown names fail with a "did you mean" hint unless `accept_extra` is set, in which case they
    are returned in `extra` untouched for the plugin to pass on (XGBoost's native parameters).
    `also_known` are names validated elsewhere (the core's own), offered as spelling hints.
    """
    by_name: dict[str, Hyperparameter] = {}
    for entry in declared:
        for name in (entry.name, *entry.aliases):
            by_name[name] = entry
    values: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    extra: dict[str, Any] = {}
    for name, value in given.items():
        declaration = by_name.get(name)
        if declaration is None:
            if accept_extra:
                extra[name] = value
                continue
            known = ", ".join(sorted({*(d.name for d in declared), *also_known}))
            hint = did_you_mean(name, [*by_name, *also_known])
            raise HyperparameterError(f"unknown hyperparameter '{name}' for {owner}{hint}. Known: {known}")
        canonical = declaration.name
        if canonical in spelled:
            raise HyperparameterError(
                f"hyperparameters '{spelled[canonical]}' and '{name}' both set '{canonical}'; give only one"
            )
        spelled[canonical] = name
        if value is None:
            continue
        values[canonical] = declaration.convert(value, spelled=name)
    for declaration in declared:
        if declaration.name in values:
            continue
        if declaration.required:
            raise HyperparameterError(
                f"hyperparameter '{declaration.name}' is required for {owner}: {declaration.help}"
            )
        if declaration.default is not None:
            values[declaration.name] = declaration.default
    return ValidatedHyperparameters(values, extra)


def string_list(value: Any) -> list[str]:
    """A list of names given as a JSON list or a comma-separated string ("rmse,mae")."""
    if isinstance(value, str):
        items = [part.strip() for part in value.split(",")]
    elif isinstance(value, list):
        items = [str(part).strip() for part in value]
    else:
        raise ValueError("expected names separated by commas")
    if not all(items):
        raise ValueError("empty name in the list")
    return items


string_list.type_name = "comma-separated list"  # type: ignore[attr-defined]
