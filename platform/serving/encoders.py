"""Predictions to response bodies: CSV, JSON, JSON Lines, NPY and RecordIO-protobuf."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import numpy as np
import orjson

from ..errors import NotAcceptableError
from ..recordio import encode_answers


def _is_numeric(predictions: np.ndarray) -> bool:
    return predictions.dtype.kind in "biuf"


def _record_cells(record: dict) -> list[Any]:
    """A multi-output record (see outputs.predict_output) as CSV cells, one cell an output: a list
    as one quoted cell, `"[0.1, 0.9]"`, as SageMaker's built-in algorithms write it (flattened,
    the cells of a record could not be told apart)."""
    return [json.dumps(value) if isinstance(value, list) else value for value in record.values()]


def encode_csv(predictions: np.ndarray) -> bytes:
    if predictions.ndim == 1 and len(predictions) and isinstance(predictions[0], dict):
        predictions = np.array([_record_cells(r) for r in predictions], dtype=object)
    if _is_numeric(predictions):
        predictions = np.ascontiguousarray(predictions)  # orjson reads contiguous arrays only
        if predictions.ndim == 1:
            body = orjson.dumps(predictions, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1]
            return body.replace(b",", b"\n") + b"\n"
        rows = (orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1] for row in predictions)
        return b"\n".join(rows) + b"\n"
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerows([row] if predictions.ndim == 1 else row for row in predictions.tolist())
    return out.getvalue().encode("utf-8")


def _jsonable(predictions: np.ndarray) -> Any:
    # orjson serialises contiguous numeric arrays directly (a column slice is not contiguous).
    return np.ascontiguousarray(predictions) if _is_numeric(predictions) else predictions.tolist()


def encode_json(predictions: np.ndarray) -> bytes:
    return orjson.dumps({"predictions": _jsonable(predictions)}, option=orjson.OPT_SERIALIZE_NUMPY)


def encode_jsonlines(predictions: np.ndarray) -> bytes:
    lines = [orjson.dumps(item, option=orjson.OPT_SERIALIZE_NUMPY) for item in _jsonable(predictions)]
    return b"\n".join(lines) + b"\n"


def encode_npy(predictions: np.ndarray) -> bytes:
    if predictions.ndim == 1 and len(predictions) and isinstance(predictions[0], dict):
        raise NotAcceptableError(
            "application/x-npy cannot hold several outputs per record; accept text/csv or application/json"
        )
    if predictions.dtype == object:
        predictions = predictions.astype(str)
    out = io.BytesIO()
    np.save(out, predictions, allow_pickle=False)
    return out.getvalue()


def _record_values(value: Any) -> np.ndarray | list[str]:
    """One output of one row as a RecordIO value: numbers as an array, anything else as text."""
    items = value if isinstance(value, list) else [value]
    if all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in items):
        return np.asarray(items, dtype=np.float64)
    return [str(v) for v in items]


def encode_recordio(predictions: np.ndarray) -> bytes:
    """One record per row, the answer in its `label` map, as the SDK's RecordDeserializer reads
    it: several outputs under their names; a single output under "score" when it is numbers (a
    value, or a row of them), "predicted_label" when it is text (class labels)."""
    if predictions.ndim == 1 and len(predictions) and isinstance(predictions[0], dict):
        answers = [{name: _record_values(value) for name, value in record.items()} for record in predictions]
    elif _is_numeric(predictions):
        rows = predictions.reshape(len(predictions), -1)
        answers = [{"score": row} for row in rows]
    else:
        answers = [{"predicted_label": [str(label)]} for label in predictions.tolist()]
    return encode_answers(answers)


def encode_batch_lines(predictions: np.ndarray) -> bytes:
    """A batch transform's answer as SageMaker's built-in XGBoost writes it with SAGEMAKER_BATCH:
    one line a row, a value as it is, a row of values (probabilities) as a list, `[0.1, 0.9]`."""
    lines = [
        json.dumps(row) if isinstance(row, list) else orjson.dumps(row).decode()
        for row in predictions.tolist()
    ]
    return ("\n".join(lines) + "\n").encode() if lines else b""
