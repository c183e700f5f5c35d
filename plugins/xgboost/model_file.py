"""An XGBoost model file read in Python, bounded, before XGBoost's own parser sees it.

XGBoost's loader trusts the numbers in the file: a tree whose `size_leaf_vector` is -1 crashes the
process inside `Booster.load_model` (found by tests/test_model_fuzz.py), before anything could check
what it loaded. So the file is first decoded here, as UBJSON (XGBoost's default, `.ubj`) or JSON,
with every count checked against the bytes that are left and the nesting depth bounded, and
`model_checks.check_document` refuses it unless every tree is sound; only then does XGBoost parse
it. The decoded document has the shape of XGBoost's JSON model (typed UBJSON arrays as numpy
arrays).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from sagecraft.errors import ModelLoadError

from .binary_format import MAGIC, read_binary_model
from .byte_reader import ByteReader

MAX_DEPTH = 64  # XGBoost's documents nest about 8 deep
_NUMBERS = {"i": ">i1", "U": ">u1", "I": ">i2", "l": ">i4", "L": ">i8", "d": ">f4", "D": ">f8"}


class _UBJSON(ByteReader):
    """UBJSON (draft 12, as XGBoost writes and reads it) from a bytes object."""

    format_name = "UBJSON model"

    def peek(self) -> bytes:
        return self.data[self.at : self.at + 1]

    def marker(self) -> str:
        return self.take(1).decode("latin-1")

    def integer(self, marker: str) -> int:
        if marker not in _NUMBERS or marker in "dD":
            raise self.fail(f"marker {marker!r} where a length belongs")
        return int(np.frombuffer(self.take(np.dtype(_NUMBERS[marker]).itemsize), _NUMBERS[marker])[0])

    def string(self, marker: str = "S") -> str:
        if marker != "S":
            raise self.fail(f"marker {marker!r} where a string belongs")
        try:
            return self.take(self.integer(self.marker())).decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("a string that is not UTF-8") from None

    def value(self, depth: int, marker: str | None = None) -> Any:
        marker = marker or self.marker()
        if marker in _NUMBERS:
            dtype = np.dtype(_NUMBERS[marker])
            number = np.frombuffer(self.take(dtype.itemsize), dtype)[0]
            return float(number) if dtype.kind == "f" else int(number)
        if marker == "S":
            return self.string()
        if marker in "TFZ":
            return {"T": True, "F": False, "Z": None}[marker]
        if marker not in "{[":
            raise self.fail(f"unknown marker {marker!r}")
        if depth >= MAX_DEPTH:
            raise self.fail(f"nesting deeper than {MAX_DEPTH}")
        if marker == "{":
            return self._object(depth)
        return self._array(depth)

    def _object(self, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while self.peek() != b"}":
            if not self.peek():
                raise self.fail("an object that never ends")
            key = self.take(self.integer(self.marker())).decode("utf-8", "replace")
            if key in out:  # which of the two would XGBoost keep?
                raise self.fail(f"key {key!r} twice in one object")
            out[key] = self.value(depth + 1)
        self.take(1)
        return out

    def _array(self, depth: int) -> Any:
        typed = None
        if self.peek() == b"$":
            self.take(1)
            typed = self.marker()
            if typed not in _NUMBERS:  # a typed array of nulls would cost no bytes per element
                raise self.fail(f"a typed array of {typed!r}")
        if self.peek() == b"#":
            self.take(1)
            count = self.integer(self.marker())
            if typed is not None:
                dtype = np.dtype(_NUMBERS[typed])
                if count < 0 or count > self.left() // dtype.itemsize:
                    raise self.fail(f"an array of {count} numbers runs past the end of the file")
                return np.frombuffer(self.take(count * dtype.itemsize), dtype).astype(dtype.newbyteorder("="))
            if count < 0 or count > self.left():  # every element takes a byte at least
                raise self.fail(f"an array of {count} values runs past the end of the file")
            return [self.value(depth + 1) for _ in range(count)]
        if typed is not None:
            raise self.fail("a typed array without a count")
        items = []
        while self.peek() != b"]":
            if not self.peek():
                raise self.fail("an array that never ends")
            items.append(self.value(depth + 1))
        self.take(1)
        return items


def read_document(data: bytes) -> dict[str, Any]:
    """The model document in `data`, an XGBoost model file in UBJSON, JSON or XGBoost's old binary
    format (binary_format.py). Raises ModelLoadError for anything else, naming what is wrong and
    where."""
    if data[:4] == MAGIC:
        return read_binary_model(data)
    if data[:1] != b"{":
        raise ModelLoadError(
            "not an XGBoost model in UBJSON, JSON or XGBoost's binary format (pickled boosters are not read)"
        )
    if data[1:2] in (b'"', b" ", b"\n", b"\r", b"\t", b"}"):
        try:
            document = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ModelLoadError(f"not a valid JSON model: {exc}") from None
    else:
        reader = _UBJSON(data)
        document = reader.value(0)
        if reader.at != len(data):
            raise reader.fail("bytes after the end of the model")
    if not isinstance(document, dict):
        raise ModelLoadError("not an XGBoost model: the file holds no JSON object")
    return document
