"""SageMaker's RecordIO-protobuf format (`application/x-recordio-protobuf`), read and written
without a protobuf runtime: the format of the built-in algorithms' channels and of the SDK's
`RecordSerializer` and `RecordDeserializer`.

Framing (dmlc RecordIO): each record is a little-endian uint32 magic (0xCED7230A), a uint32 whose
low 29 bits are the payload's length and whose top 3 bits say whether the payload is whole (0) or
the first (1), a middle (2) or the last (3) part of a record split where its bytes held the magic
(the reader puts the magic back between parts), then the payload padded to 4 bytes. Each payload
is a protobuf `aialgs.data.Record` (`sagemaker/amazon/record.proto`): `features` and `label` are
maps from a name (the SDK writes "values") to a `Value`, a dense or sparse tensor of float32,
float64 or int32 values; a sparse tensor has `keys` (positions) and `shape` (its width).

Every count is checked against the bytes left and every position against the width before
anything is allocated: a record is read as hostile input, and RecordIOError names the record (from
1) and its byte offset. Sparse positions a record does not mention are missing values, as in
libsvm.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

__all__ = [
    "MAGIC",
    "RecordIOError",
    "Rows",
    "Tensor",
    "decode_rows",
    "encode_answers",
    "is_recordio",
    "unwrap",
]

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LENGTH_MASK = (1 << 29) - 1
_WHOLE, _FIRST, _MIDDLE, _LAST = range(4)
# Value's tensor fields, and the numpy type and protobuf wire type of their values.
_TENSORS: dict[int, tuple[np.dtype, int]] = {
    2: (np.dtype("<f4"), 5),
    3: (np.dtype("<f8"), 1),
    7: (np.dtype("<i4"), 0),
}
_BYTES_VALUE = 9
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


class RecordIOError(ValueError):
    """A body or file that is not valid RecordIO-protobuf; the message names the record."""


@dataclass(frozen=True)
class Tensor:
    """One `Value`: its values, and for a sparse tensor its keys and shape."""

    values: np.ndarray
    keys: np.ndarray | None = None
    shape: tuple[int, ...] = ()

    @property
    def width(self) -> int:
        """The number of columns it fills: its shape's last dimension when sparse."""
        if self.keys is None:
            return len(self.values)
        return self.shape[-1] if self.shape else (int(self.keys.max()) + 1 if len(self.keys) else 0)


@dataclass(frozen=True)
class Rows:
    """Records as rows: features (float64, NaN where a sparse record says nothing) and, when
    every record has one, the label (its first value)."""

    features: np.ndarray
    labels: np.ndarray | None
    sparse: bool = False  # some record's tensor is sparse (its width is then its shape's)


def is_recordio(head: bytes) -> bool:
    """Whether bytes start like RecordIO (the magic number)."""
    return head[:4] == _MAGIC_BYTES


def _payloads(data: bytes | memoryview) -> Iterator[tuple[int, bytes]]:
    """(record number, payload) for each record, split records joined."""
    view = memoryview(data)
    offset, number, parts = 0, 0, None
    while offset < len(view):
        where = f"record {number + 1} (byte {offset})"
        if len(view) - offset < 8:
            raise RecordIOError(f"{where}: truncated: {len(view) - offset} bytes where a header needs 8")
        magic, word = struct.unpack_from("<II", view, offset)
        if magic != MAGIC:
            raise RecordIOError(f"{where}: no RecordIO magic number (found 0x{magic:08x})")
        length, flag = word & _LENGTH_MASK, word >> 29
        start = offset + 8
        end = start + length
        if end > len(view):
            raise RecordIOError(f"{where}: declares {length} bytes, only {len(view) - start} follow")
        payload = bytes(view[start:end])
        offset = start + ((length + 3) & ~3)
        if flag == _WHOLE and parts is None:
            number += 1
            yield number, payload
        elif flag == _FIRST and parts is None:
            parts = [payload]
        elif flag in (_MIDDLE, _LAST) and parts is not None:
            parts.append(payload)
            if flag == _LAST:
                number += 1
                yield number, _MAGIC_BYTES.join(parts)
                parts = None
        else:
            raise RecordIOError(f"{where}: part flag {flag} out of sequence")
    if parts is not None:
        raise RecordIOError(f"record {number + 1}: ends inside a record split into parts")


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        piece = stream.read(size - len(data))
        if not piece:
            break
        data += piece
    return bytes(data)


def unwrap(stream: BinaryIO, chunk: int) -> Iterator[bytes]:
    """The payloads of a RecordIO-framed stream (SageMaker's `RecordWrapperType: RecordIO`, which
    wraps each S3 object in a record), concatenated and yielded as they arrive in pieces of at
    most `chunk` bytes, so that a record of hundreds of megabytes is never held whole; a bad
    header or a truncated record is a RecordIOError naming the record."""
    number, offset, parts = 0, 0, False
    while True:
        header = _read_exactly(stream, 8)
        if not header:
            if parts:
                raise RecordIOError(f"record {number + 1}: the stream ends inside a record split into parts")
            return
        where = f"record {number + 1} (byte {offset})"
        if len(header) < 8:
            raise RecordIOError(f"{where}: truncated: {len(header)} bytes where a header needs 8")
        magic, word = struct.unpack("<II", header)
        if magic != MAGIC:
            raise RecordIOError(f"{where}: no RecordIO magic number (found 0x{magic:08x})")
        length, flag = word & _LENGTH_MASK, word >> 29
        continues = flag in (_MIDDLE, _LAST)
        if continues != parts:
            raise RecordIOError(f"{where}: part flag {flag} out of sequence")
        if continues:
            yield _MAGIC_BYTES  # the magic that split the record
        remaining = length
        while remaining:
            piece = stream.read(min(chunk, remaining))
            if not piece:
                raise RecordIOError(f"{where}: declares {length} bytes, only {length - remaining} follow")
            remaining -= len(piece)
            yield piece
        _read_exactly(stream, -length % 4)
        offset += 8 + length + (-length % 4)
        parts = flag in (_FIRST, _MIDDLE)
        if not parts:
            number += 1


def _varint(data: bytes, offset: int, where: str) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if offset >= len(data):
            raise RecordIOError(f"{where}: truncated varint")
        byte = data[offset]
        offset += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, offset
        shift += 7
        if shift > 63:
            raise RecordIOError(f"{where}: varint longer than 10 bytes")


def _fields(data: bytes, where: str) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of a protobuf message: ints for varint and fixed types,
    bytes for length-delimited ones."""
    offset = 0
    while offset < len(data):
        key, offset = _varint(data, offset, where)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, offset = _varint(data, offset, where)
            yield number, wire, value
        elif wire in (_FIXED64, _FIXED32):
            size = 8 if wire == _FIXED64 else 4
            if offset + size > len(data):
                raise RecordIOError(f"{where}: truncated field {number}")
            yield number, wire, data[offset : offset + size]
            offset += size
        elif wire == _LENGTH_DELIMITED:
            length, offset = _varint(data, offset, where)
            if length > len(data) - offset:
                raise RecordIOError(
                    f"{where}: field {number} declares {length} bytes, {len(data) - offset} left"
                )
            yield number, wire, data[offset : offset + length]
            offset += length
        else:
            raise RecordIOError(f"{where}: unsupported protobuf wire type {wire} (field {number})")


def _packed_varints(data: bytes, where: str) -> list[int]:
    values, offset = [], 0
    while offset < len(data):
        value, offset = _varint(data, offset, where)
        values.append(value)
    return values


def _tensor(data: bytes, dtype: np.dtype, wire: int, where: str) -> Tensor:
    chunks: list[np.ndarray] = []
    keys: list[int] = []
    shape: list[int] = []
    for number, kind, value in _fields(data, where):
        if number == 1 and kind == _LENGTH_DELIMITED and wire != _VARINT:  # packed fixed-size values
            assert isinstance(value, bytes)
            if len(value) % dtype.itemsize:
                raise RecordIOError(f"{where}: {len(value)} bytes of {dtype} values")
            chunks.append(np.frombuffer(value, dtype=dtype))
        elif number == 1 and kind == _LENGTH_DELIMITED:  # packed int32 varints
            assert isinstance(value, bytes)
            ints = [v - (1 << 64) if v >= 1 << 63 else v for v in _packed_varints(value, where)]
            chunks.append(np.array(ints, dtype=np.int64).astype(dtype))
        elif number == 1 and kind == wire:  # one value, not packed
            if isinstance(value, bytes):
                chunks.append(np.frombuffer(value, dtype=dtype))
            else:
                chunks.append(np.array([value - (1 << 64) if value >= 1 << 63 else value]).astype(dtype))
        elif number in (2, 3):
            found = _packed_varints(value, where) if isinstance(value, bytes) else [value]
            (keys if number == 2 else shape).extend(found)
        else:
            raise RecordIOError(f"{where}: unexpected field {number} in a tensor")
    values = np.concatenate(chunks) if chunks else np.empty(0, dtype=dtype)
    if not keys and not (shape and len(values) == 0):  # (a sparse row may have no entries at all)
        return Tensor(values)
    if len(keys) != len(values):
        raise RecordIOError(f"{where}: a sparse tensor has {len(keys)} keys for {len(values)} values")
    key_array = np.array(keys, dtype=np.uint64)
    tensor = Tensor(values, key_array, tuple(shape))
    if len(shape) > 1:
        raise RecordIOError(f"{where}: a sparse tensor of shape {shape}; one row per record is read")
    if shape and len(key_array) and int(key_array.max()) >= shape[0]:
        raise RecordIOError(f"{where}: key {int(key_array.max())} is outside the tensor's width {shape[0]}")
    return tensor


def _value(data: bytes, where: str) -> Tensor:
    for number, kind, value in _fields(data, where):
        if number in _TENSORS and kind == _LENGTH_DELIMITED:
            dtype, wire = _TENSORS[number]
            assert isinstance(value, bytes)
            return _tensor(value, dtype, wire, where)
        if number == _BYTES_VALUE:
            raise RecordIOError(f"{where}: holds bytes, not numbers")
    return Tensor(np.empty(0))


def _map(data: bytes, where: str) -> tuple[str, Tensor]:
    name, tensor = "", Tensor(np.empty(0))
    for number, kind, value in _fields(data, where):
        if number == 1 and kind == _LENGTH_DELIMITED:
            assert isinstance(value, bytes)
            try:
                name = value.decode("utf-8")
            except UnicodeDecodeError:
                raise RecordIOError(f"{where}: a map key is not UTF-8") from None
        elif number == 2 and kind == _LENGTH_DELIMITED:
            assert isinstance(value, bytes)
            tensor = _value(value, f"{where}, '{name}'" if name else where)
    return name, tensor


def _record(payload: bytes, where: str) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    features: dict[str, Tensor] = {}
    label: dict[str, Tensor] = {}
    for number, kind, value in _fields(payload, where):
        if number in (1, 2) and kind == _LENGTH_DELIMITED:
            assert isinstance(value, bytes)
            name, tensor = _map(value, where)
            (features if number == 1 else label)[name] = tensor
    return features, label


def decode_rows(data: bytes | memoryview, max_cells: int | None = None) -> Rows:
    """Every record of `data` as one row of a float64 matrix (the first feature tensor of each
    record, "values" when there are several) and its label.

    `max_cells` bounds rows x width before the matrix exists (a sparse record of a few bytes may
    declare a width of billions); RecordIOError names the record at fault."""
    rows: list[Tensor] = []
    labels: list[float] = []
    width = 0
    for number, payload in _payloads(data):
        where = f"record {number}"
        features, label = _record(payload, where)
        if not features:
            raise RecordIOError(f"{where}: holds no features")
        tensor = features.get("values") or next(iter(features.values()))
        rows.append(tensor)
        width = max(width, tensor.width)
        if label:
            values = (label.get("values") or next(iter(label.values()))).values
            if len(values) != 1:
                raise RecordIOError(f"{where}: a label of {len(values)} values; one is read")
            labels.append(float(values[0]))
        if max_cells is not None and len(rows) * max(width, 1) > max_cells:
            raise RecordIOError(
                f"{where}: the records decode to more than {max_cells:,} cells ({len(rows)} rows of "
                f"{width} features so far)"
            )
    if not rows:
        raise RecordIOError("no records")
    matrix = np.full((len(rows), width), np.nan)
    for index, tensor in enumerate(rows):
        if tensor.keys is None:
            if len(tensor.values) != width:
                raise RecordIOError(
                    f"record {index + 1}: {len(tensor.values)} values where another record has {width}"
                )
            matrix[index] = tensor.values
        else:
            matrix[index, tensor.keys.astype(np.intp)] = tensor.values
    if labels and len(labels) != len(rows):
        raise RecordIOError(f"{len(rows) - len(labels)} of {len(rows)} records have no label")
    sparse = any(tensor.keys is not None for tensor in rows)
    return Rows(matrix, np.array(labels) if labels else None, sparse)


# --- writing ---------------------------------------------------------------------------------


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _delimited(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | _LENGTH_DELIMITED) + _encode_varint(len(payload)) + payload


def _value_bytes(values: np.ndarray | Sequence[str]) -> bytes:
    if isinstance(values, np.ndarray) and values.dtype.kind in "biuf":
        floats = np.ascontiguousarray(values, dtype="<f4").ravel()
        tensor = _delimited(1, floats.tobytes()) if len(floats) else b""
        return _delimited(2, tensor)
    texts = b"".join(_delimited(1, str(text).encode("utf-8")) for text in values)
    return _delimited(_BYTES_VALUE, texts + _delimited(2, b"text/plain"))


def _frame(payload: bytes) -> bytes:
    """One record's framing, whole: the SDK's reader (`read_recordio`) takes the length word as
    it is, so a record is never split, even where its bytes hold the magic."""
    return struct.pack("<II", MAGIC, len(payload)) + payload + b"\x00" * (-len(payload) % 4)


def encode_answers(answers: Sequence[Mapping[str, np.ndarray | Sequence[str]]]) -> bytes:
    """One record per answer, its outputs in the record's `label` map: numbers as float32
    tensors, text (class labels) as a Bytes value of UTF-8 strings."""
    out = bytearray()
    for answer in answers:
        payload = b"".join(
            _delimited(2, _delimited(1, name.encode("utf-8")) + _delimited(2, _value_bytes(values)))
            for name, values in answer.items()
        )
        out += _frame(payload)
    return bytes(out)
