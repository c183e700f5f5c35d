"""The built-in content types, registered through the `register_content_types` hook exactly as a
plugin's would be: CSV, JSON, JSON Lines, NPY, libsvm, Parquet and RecordIO-protobuf bodies to
feature tables (`csv_bodies`, `json_bodies`, `array_bodies`), predictions back in all but libsvm
and Parquet (`encoders`). Decoders name the row and column at fault in a BadRequestError; they never guess
missing columns.
"""

from __future__ import annotations

import functools

from ..content_registry import ContentTypeRegistry
from ..hooks import hookimpl
from ..media_types import CSV, JSON, JSONLINES, LIBSVM, NPY, PARQUET, RECORDIO
from .array_bodies import decode_libsvm, decode_npy, decode_parquet, decode_recordio
from .csv_bodies import decode_csv, read_csv_numbers
from .encoders import encode_csv, encode_json, encode_jsonlines, encode_npy, encode_recordio
from .json_bodies import decode_json, decode_jsonlines, read_json_numbers


@hookimpl
def register_content_types(registry: ContentTypeRegistry) -> None:
    """The built-in content types, registered exactly as a plugin's would be."""
    # In order of preference: a wildcard Accept such as application/* picks the first that fits.
    registry.add_decoder(CSV, decode_csv, line_oriented=True, numbers=read_csv_numbers)
    registry.add_decoder(JSON, decode_json, numbers=read_json_numbers)
    registry.add_decoder(JSONLINES, decode_jsonlines, line_oriented=True)
    registry.add_decoder(NPY, decode_npy)
    registry.add_decoder(LIBSVM, functools.partial(decode_libsvm, limits=registry), line_oriented=True)
    registry.add_decoder(PARQUET, functools.partial(decode_parquet, limits=registry))
    registry.add_decoder(RECORDIO, functools.partial(decode_recordio, limits=registry))
    registry.add_encoder(CSV, encode_csv, line_oriented=True)
    registry.add_encoder(JSON, encode_json)
    registry.add_encoder(JSONLINES, encode_jsonlines, line_oriented=True)
    registry.add_encoder(NPY, encode_npy)
    registry.add_encoder(RECORDIO, encode_recordio)
