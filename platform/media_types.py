"""The media-type vocabulary of requests, answers and training channels: one name for each type,
the spellings clients and SageMaker use for it, and the parsing of a header or ContentType value.

A request's `Content-Type`, an `Accept` entry and a channel's `ContentType` resolve through the
same aliases, so a type that a request may use is a type a channel may use, and the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "ALIASES",
    "CSV",
    "JSON",
    "JSONLINES",
    "LIBSVM",
    "NPY",
    "PARQUET",
    "RECORDIO",
    "MediaType",
    "canonical",
    "media_type",
    "parse",
    "short_name",
]

CSV = "text/csv"
JSON = "application/json"
JSONLINES = "application/jsonlines"
NPY = "application/x-npy"
LIBSVM = "text/libsvm"
PARQUET = "application/x-parquet"
RECORDIO = "application/x-recordio-protobuf"

# Spellings clients use for the same thing.
ALIASES = {
    "text/x-csv": CSV,
    "application/csv": CSV,
    "application/x-jsonlines": JSONLINES,
    "application/jsonl": JSONLINES,
    "application/json-lines": JSONLINES,
    "application/x-ndjson": JSONLINES,
    "application/npy": NPY,
    "text/x-libsvm": LIBSVM,
    "application/x-libsvm": LIBSVM,
    "application/parquet": PARQUET,
    "application/vnd.apache.parquet": PARQUET,
    "application/recordio-protobuf": RECORDIO,
    # The bare words SageMaker's built-in algorithms accept as a channel's ContentType.
    "csv": CSV,
    "libsvm": LIBSVM,
    "parquet": PARQUET,
    "recordio-protobuf": RECORDIO,
}
# The word logs and messages use for a type: "a channel of libsvm data".
_SHORT_NAMES = {
    CSV: "csv",
    JSON: "json",
    JSONLINES: "jsonlines",
    NPY: "npy",
    LIBSVM: "libsvm",
    PARQUET: "parquet",
    RECORDIO: "recordio-protobuf",
}


@dataclass(frozen=True)
class MediaType:
    """A parsed header value: the canonical type and its parameters (names lower-case, values as
    given, without quotes)."""

    name: str
    parameters: dict[str, str] = field(default_factory=dict)


def canonical(bare: str) -> str:
    """The canonical name of a bare, lower-case media type (aliases resolved)."""
    return ALIASES.get(bare, bare)


def parse(value: str) -> MediaType:
    """`text/csv; label_size=1; charset="utf-8"` -> MediaType("text/csv", {"label_size": "1",
    "charset": "utf-8"})."""
    bare, *parameters = (part.strip() for part in value.split(";"))
    found: dict[str, str] = {}
    for parameter in filter(None, parameters):
        key, _, raw = parameter.partition("=")
        found[key.strip().lower()] = raw.strip().strip('"')
    return MediaType(canonical(bare.lower()), found)


def media_type(header: str | None) -> str | None:
    """The bare, canonical media type of a header value; None when absent or empty."""
    if header is None:
        return None
    return canonical(header.split(";", 1)[0].strip().lower()) or None


def short_name(name: str) -> str:
    """The type's word for logs and messages ("csv", "libsvm"); the type itself when it has none."""
    return _SHORT_NAMES.get(name, name)
