"""Decoding SageMaker's two hyperparameter encodings, and validating against a declaration."""

from __future__ import annotations

import json

import pytest

from sagecraft.errors import HyperparameterError
from sagecraft.hyperparameters import Hyperparameter, decode, string_list, validate

VALUES = {
    "num_round": 10,
    "eta": 0.1,
    "objective": "binary:logistic",
    "flag": True,
    "nothing": None,
    "metrics": ["rmse", "mae"],
}


@pytest.mark.parametrize("encode", [str, json.dumps], ids=["Estimator str()", "framework json"])
def test_both_sdk_encodings_decode_to_the_same_values(encode: object) -> None:
    raw = {k: encode(v) for k, v in VALUES.items() if k != "metrics"}
    decoded = decode(raw)
    expected = {k: v for k, v in VALUES.items() if k != "metrics"}
    assert decoded.values == expected


def test_reserved_keys_are_dropped_and_the_tuning_objective_kept() -> None:
    decoded = decode(
        {
            "sagemaker_program": '"x.py"',
            "sagemaker_region": "us-east-1",
            "_tuning_objective_metric": "validation:rmse",
            "eta": "0.3",
        }
    )
    assert decoded.values == {"eta": 0.3}
    assert decoded.tuning_objective_metric == "validation:rmse"


def test_python_and_json_literals_both_decode() -> None:
    raw = {"a": "True", "b": "true", "c": "False", "d": "false", "e": "None", "f": "null"}
    assert decode(raw).values == {"a": True, "b": True, "c": False, "d": False, "e": None, "f": None}


def test_hyperparameters_are_never_evaluated_as_code() -> None:
    decoded = decode({"x": "__import__('os').system('false')", "y": "[1, 2"})
    assert decoded.values == {"x": "__import__('os').system('false')", "y": "[1, 2"}


DECLARED = [
    Hyperparameter("depth", int, "tree depth", default=6, minimum=1, maximum=20, aliases=("max_depth",)),
    Hyperparameter("rate", float, "step", minimum=0, exclusive_minimum=True, maximum=1),
    Hyperparameter("kind", str, "a kind", choices=("a", "b")),
    Hyperparameter("on", bool, "switch"),
    Hyperparameter("metrics", string_list, "metric names"),
]


def test_values_are_converted_aliases_resolved_and_defaults_filled() -> None:
    result = validate({"max_depth": "7", "rate": 0.5, "on": "yes", "metrics": "a, b"}, DECLARED)
    assert result.values == {"depth": 7, "rate": 0.5, "on": True, "metrics": ["a", "b"]}
    assert validate({}, DECLARED).values == {"depth": 6}
    assert validate({"depth": 8.0}, DECLARED).values["depth"] == 8


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"dept": 3}, "unknown hyperparameter 'dept' for this algorithm (did you mean 'depth'?)"),
        ({"depth": 2.5}, "hyperparameter 'depth' = 2.5 is not a valid int"),
        ({"depth": 0}, "it must be >= 1 and <= 20"),
        ({"max_depth": 30}, "hyperparameter 'max_depth' ('depth') = 30 is out of range"),
        ({"rate": 0}, "it must be > 0 and <= 1"),
        ({"rate": "fast"}, "'rate' = 'fast' is not a valid float"),
        ({"rate": "nan"}, "NaN is not allowed"),
        ({"kind": "c"}, "choose one of: a, b"),
        ({"on": "maybe"}, "expected true or false"),
        ({"depth": True}, "not a boolean"),
        ({"depth": 3, "max_depth": 4}, "both set 'depth'"),
        ({"metrics": "a,,b"}, "empty name"),
    ],
)
def test_invalid_values_name_the_parameter_and_the_rule(given: dict, message: str) -> None:
    with pytest.raises(HyperparameterError) as error:
        validate(given, DECLARED)
    assert message in str(error.value)


def test_extra_names_pass_through_when_the_plugin_accepts_them() -> None:
    result = validate({"device": "cuda", "depth": 3}, DECLARED, accept_extra=True)
    assert result.extra == {"device": "cuda"}
    assert result.values["depth"] == 3


def test_required_hyperparameter_is_named() -> None:
    declared = [Hyperparameter("target", str, "the label column", required=True)]
    with pytest.raises(HyperparameterError, match="'target' is required"):
        validate({}, declared, owner="x")
