"""A model file's bytes read front to back, every length checked against what is left: the base
of the UBJSON reader (model_file.py) and of XGBoost 1's binary format (binary_format.py)."""

from __future__ import annotations

from sagecraft.errors import ModelLoadError


class ByteReader:
    """`data` from byte `at` on; `format_name` names the format in errors."""

    format_name = "model"

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def left(self) -> int:
        return len(self.data) - self.at

    def fail(self, why: str) -> ModelLoadError:
        return ModelLoadError(f"not a valid {self.format_name}: {why} at byte {self.at}")

    def take(self, size: int) -> bytes:
        """The next `size` bytes; ModelLoadError when fewer are left."""
        if size < 0 or size > self.left():
            raise self.fail(f"a length of {size} bytes runs past the end of the file")
        chunk = self.data[self.at : self.at + size]
        self.at += size
        return chunk
