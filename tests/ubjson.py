"""A small UBJSON writer for tests that craft XGBoost model files (XGBoost's `.ubj`); they read
them with the plugin's own reader (`sagecraft_xgboost.model_file.read_document`).

Numpy arrays are written as typed arrays of their type, as XGBoost writes them; integers as int64.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

_NUMBERS = {"i": ">i1", "U": ">u1", "I": ">i2", "l": ">i4", "L": ">i8", "d": ">f4", "D": ">f8"}
_ARRAY_MARKERS = {np.dtype(v).newbyteorder("="): k for k, v in _NUMBERS.items()}


def dumps(value: Any) -> bytes:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or value is None:
        return {True: b"T", False: b"F", None: b"Z"}[value]
    if isinstance(value, int):
        return b"L" + struct.pack(">q", value)
    if isinstance(value, float):
        return b"D" + struct.pack(">d", value)
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return b"SL" + struct.pack(">q", len(raw)) + raw
    if isinstance(value, dict):
        body = b"".join(
            b"L" + struct.pack(">q", len(k.encode())) + k.encode() + dumps(v) for k, v in value.items()
        )
        return b"{" + body + b"}"
    if isinstance(value, np.ndarray):
        marker = _ARRAY_MARKERS[value.dtype]
        return (
            b"[$"
            + marker.encode()
            + b"#L"
            + struct.pack(">q", len(value))
            + value.astype(_NUMBERS[marker]).tobytes()
        )
    if isinstance(value, (list, tuple)):
        return b"[#L" + struct.pack(">q", len(value)) + b"".join(dumps(v) for v in value)
    raise TypeError(f"cannot write {type(value).__name__} as UBJSON")
