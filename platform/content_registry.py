"""The content types the server reads and writes, as registered by plugins.

The six built-in types (CSV, JSON, JSON Lines, NPY, libsvm, Parquet) register through the same
`register_content_types` hook as a third party's, from `sagecraft.serving.codecs`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol, cast

import numpy as np
import pandas as pd

from . import categories
from .errors import (
    BadRequestError,
    DecodedTooLargeError,
    PluginError,
    TooManyRowsError,
    UnsupportedMediaTypeError,
)
from .media_types import canonical

__all__ = [
    "SMALL_BODY_BYTES",
    "ContentTypeRegistry",
    "Decoder",
    "Encoder",
    "LineDecoder",
    "NumberReader",
    "NumberRows",
]


class Decoder(Protocol):
    """decoder(body, feature_names) -> the rows as a DataFrame, one column per feature."""

    def __call__(self, body: bytes, features: Sequence[str], /) -> pd.DataFrame: ...


class LineDecoder(Protocol):
    """A line-oriented decoder (`add_decoder(..., line_oriented=True)`): also called with
    `first_row=N` for a slice of a larger body whose first line is row N."""

    def __call__(self, body: bytes, features: Sequence[str], /, first_row: int = 1) -> pd.DataFrame: ...


# Rows of plain numbers: a float64 matrix, or lists of floats (no numpy call per request).
NumberRows = np.ndarray | list[list[float]]
NumberReader = Callable[[bytes, Sequence[str]], NumberRows | None]
Encoder = Callable[[np.ndarray], bytes]
DECODED_CELL_BYTES = 8  # a feature cell as the models receive it: float64
# A body up to this size is small: a type's fast number reader may read it, and the server
# decodes it on the event loop (measured: about 100 rows of 20 features take well under a
# millisecond).
SMALL_BODY_BYTES = 16 * 1024

log = logging.getLogger(__name__)


def _bare(media_type: str) -> str:
    bare = media_type.split(";", 1)[0].strip().lower()
    if "/" not in bare:
        raise PluginError(f"'{media_type}' is not a media type such as text/csv")
    return canonical(bare)


def _check_range(table: pd.DataFrame, features: Sequence[str], first_row: int) -> None:
    """BadRequestError naming the first cell that is infinite, or beyond the largest value the
    model's library holds (`FeatureNames.largest`), whichever decoder read it."""
    largest = getattr(features, "largest", None) or np.inf
    for index, name in enumerate(table.columns):
        column = table[name]
        if column.dtype.kind != "f":
            continue
        values = column.to_numpy()
        with np.errstate(invalid="ignore"):
            beyond = ~(np.abs(values) <= largest) & ~np.isnan(values)
        if beyond.any():
            row = int(np.flatnonzero(beyond)[0])
            value = values[row]
            why = (
                "infinite values are not allowed"
                if np.isinf(value)
                else f"{value:g} is beyond the largest value this model's algorithm holds "
                f"(float32, about ±{largest:.4g})"
            )
            raise BadRequestError(f"row {row + first_row}, column {index + 1} ({name}): {why}")


class ContentTypeRegistry:
    """Decoders (request body -> feature table) and encoders (predictions -> body) by media type.

    Plugins receive it in `register_content_types` and call `add_decoder` / `add_encoder`.
    """

    def __init__(self) -> None:
        self.decoders: dict[str, Decoder | LineDecoder] = {}
        self.number_readers: dict[str, NumberReader] = {}
        self.encoders: dict[str, Encoder] = {}
        self.line_oriented: set[str] = set()
        self.line_oriented_out: set[str] = set()
        self.providers: dict[str, list[str]] = {}  # plugin name -> the types it added
        self._owner: dict[tuple[str, str], str] = {}
        self._plugin = "sagecraft"
        # Per request; the server sets them from SAGECRAFT_MAX_ROWS and SAGECRAFT_MAX_DECODED_MB.
        self.max_rows: int | None = None
        self.max_decoded_bytes: int | None = None

    def registering_for(self, plugin: str) -> ContentTypeRegistry:
        self._plugin = plugin
        return self

    def _claim(self, kind: str, media_type: str) -> None:
        previous = self._owner.get((kind, media_type))
        if previous is not None and previous != "sagecraft":
            raise PluginError(f"plugins '{previous}' and '{self._plugin}' both add a {kind} for {media_type}")
        if previous == "sagecraft":
            log.info("plugin '%s' replaces the built-in %s for %s", self._plugin, kind, media_type)
        self._owner[(kind, media_type)] = self._plugin
        self.providers.setdefault(self._plugin, [])
        if media_type not in self.providers[self._plugin]:
            self.providers[self._plugin].append(media_type)

    def add_decoder(
        self,
        media_type: str,
        decoder: Decoder | LineDecoder,
        *,
        line_oriented: bool = False,
        numbers: NumberReader | None = None,
    ) -> None:
        """Read request bodies of `media_type`: decoder(body, feature_names) -> DataFrame.

        `line_oriented=True` says one record per line, so a large body may be decoded in slices of
        whole lines; the decoder is then also called with `first_row=N`, the number of the slice's
        first line, for its error messages.

        `numbers`, optional, is a fast reader for small bodies (up to 16 KiB) of a model without
        categorical features: numbers(body, feature_names) -> the rows as lists of floats or as a
        float64 matrix, one value per feature, exactly the values `decoder` would give; or None
        for any body it does not read (it must never raise), which `decoder` then reads or
        explains. It spares a small request the DataFrame: the server builds one for all the
        requests it predicts together.
        """
        media_type = _bare(media_type)
        self._claim("decoder", media_type)
        self.decoders[media_type] = decoder
        if numbers is None:
            self.number_readers.pop(media_type, None)  # a replaced decoder's reader goes with it
        else:
            self.number_readers[media_type] = numbers
        if line_oriented:
            self.line_oriented.add(media_type)
        else:
            self.line_oriented.discard(media_type)

    def add_encoder(self, media_type: str, encoder: Encoder, *, line_oriented: bool = False) -> None:
        """Write responses of `media_type`: encoder(predictions) -> bytes.

        `line_oriented=True` says the encoder writes one newline-terminated line per row, so the
        answers for consecutive slices of a large request may simply be concatenated.
        """
        media_type = _bare(media_type)
        self._claim("encoder", media_type)
        self.encoders[media_type] = encoder
        if line_oriented:
            self.line_oriented_out.add(media_type)
        else:
            self.line_oriented_out.discard(media_type)

    def decode(
        self, content_type: str, body: bytes, features: Sequence[str], first_row: int = 1
    ) -> pd.DataFrame:
        """Rows of `body`; `first_row` numbers them when the body is one slice of a larger one."""
        self.check_decodable(content_type)
        if first_row != 1:
            table = cast(LineDecoder, self.decoders[content_type])(body, features, first_row=first_row)
        elif not body.strip():
            raise BadRequestError("the request body is empty")
        else:
            table = self.decoders[content_type](body, features)
        table = categories.encode(table, getattr(features, "categories", None) or {})
        self._check_rows(first_row - 1 + len(table))
        _check_range(table, features, first_row)
        return table

    def read_numbers(self, content_type: str, body: bytes, features: Sequence[str]) -> NumberRows | None:
        """A small body of plain numbers as rows of floats, by the type's fast reader; None
        when the type has none, the model has categorical features or the reader declines, and
        `decode` must answer instead."""
        reader = self.number_readers.get(content_type)
        if reader is None or getattr(features, "categories", None):
            return None
        rows = reader(body, features)
        if rows is not None:
            self._check_rows(len(rows))
        return rows

    def _check_rows(self, rows: int) -> None:
        if self.max_rows is not None and rows > self.max_rows:
            raise TooManyRowsError(
                f"the body holds more than {self.max_rows} rows, the limit per request; send "
                "fewer rows or raise SAGECRAFT_MAX_ROWS"
            )

    def check_decoded_size(self, rows: int, columns: int, first_row: int = 1) -> None:
        """Called by decoders before they build a table of `rows` x `columns` cells (a slice of a
        larger body when `first_row` > 1): a body is large or small by what it decodes to, not by
        what it weighs. TooManyRowsError or DecodedTooLargeError (413) beyond the server's limits.
        A plugin's decoder can call it on the registry its `register_content_types` received."""
        self._check_rows(first_row - 1 + rows)
        size = rows * max(columns, 1) * DECODED_CELL_BYTES
        if self.max_decoded_bytes is not None and size > self.max_decoded_bytes:
            raise DecodedTooLargeError(
                f"the body decodes to {rows:,} rows of {columns} features ({size / 2**20:,.0f} MiB), "
                f"over the limit of {self.max_decoded_bytes / 2**20:,.0f} MiB; send fewer rows or "
                "raise SAGECRAFT_MAX_DECODED_MB"
            )

    def check_decodable(self, content_type: str) -> None:
        if content_type not in self.decoders:
            raise UnsupportedMediaTypeError(
                f"cannot read Content-Type '{content_type}'; send one of: {', '.join(self.decoders)}"
            )

    def encode(self, media_type: str, predictions: np.ndarray) -> bytes:
        return self.encoders[media_type](predictions)
