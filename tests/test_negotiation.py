"""Units: the media-type vocabulary (sagecraft.media_types) and content negotiation
(sagecraft.serving.negotiation), without a server."""

from __future__ import annotations

import pytest

from sagecraft import media_types
from sagecraft.errors import DataError, NotAcceptableError
from sagecraft.media_types import CSV, JSON, JSONLINES, LIBSVM, NPY, PARQUET
from sagecraft.serving.negotiation import negotiate
from sagecraft.training.formats import CHANNEL_TYPES, FormatSpec

SUPPORTED = [CSV, JSON, JSONLINES, NPY]


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, CSV),
        ("", CSV),
        ("application/json", JSON),
        ("text/csv;q=0.5, application/json", JSON),  # q=1 beats q=0.5, whatever the order
        ("application/json;q=0.2, text/csv;q=0.9", CSV),
        ("application/x-ndjson", JSONLINES),  # an alias
        ("APPLICATION/JSON", JSON),
        ("*/*", CSV),  # the default
        ("application/*", JSON),  # the first supported of the family
        ("text/*", CSV),
        ("application/xml, application/json;q=0.1", JSON),  # an unsupported type is passed over
        ("application/json;q=0, text/csv", CSV),  # q=0 means "not this"
        ("application/json;q=abc, text/csv;q=0.5", CSV),  # an unreadable q counts as 0
    ],
)
def test_negotiation_picks_the_best_supported_type(accept: str | None, expected: str) -> None:
    assert negotiate(accept, SUPPORTED, CSV) == expected


def test_negotiation_refuses_with_the_supported_types_named() -> None:
    with pytest.raises(NotAcceptableError, match="supported: text/csv, application/json"):
        negotiate("application/xml", SUPPORTED, CSV)
    with pytest.raises(NotAcceptableError):
        negotiate("application/json;q=0", SUPPORTED, CSV)


def test_a_header_value_parses_to_its_canonical_type_and_parameters() -> None:
    parsed = media_types.parse('Text/X-CSV; Label_Size=1; charset="UTF-8"; header=present')
    assert parsed.name == CSV
    assert parsed.parameters == {"label_size": "1", "charset": "UTF-8", "header": "present"}
    assert media_types.media_type(" application/jsonl ; charset=utf-8") == JSONLINES
    assert media_types.media_type(None) is None
    assert media_types.media_type(";") is None
    assert media_types.short_name(LIBSVM) == "libsvm"
    assert media_types.short_name("text/x-unknown") == "text/x-unknown"


@pytest.mark.parametrize("alias", sorted(media_types.ALIASES))
def test_one_vocabulary_for_requests_and_channels(alias: str) -> None:
    """Every spelling a request may use for a channel format is a spelling a channel may use."""
    name = media_types.canonical(alias)
    if name in CHANNEL_TYPES:
        assert FormatSpec.from_content_type(alias, "train").name == name
    else:
        with pytest.raises(DataError, match="sagecraft reads"):
            FormatSpec.from_content_type(alias, "train")


def test_channel_formats_are_media_types() -> None:
    assert set(CHANNEL_TYPES) == {CSV, LIBSVM, PARQUET, JSONLINES, media_types.RECORDIO}
    spec = FormatSpec.from_content_type("text/csv;header=Present;charset=Latin-1", "train")
    assert (spec.name, spec.header, spec.encoding) == (CSV, True, "latin-1")
    with pytest.raises(DataError, match="header must be 'present' or 'absent'"):
        FormatSpec.from_content_type("text/csv;header=maybe", "train")


@pytest.mark.parametrize("alias", sorted(media_types.ALIASES))
def test_every_alias_is_a_request_type_the_server_reads(alias: str) -> None:
    from sagecraft.environment import ServingSettings
    from sagecraft.plugins import installed_plugins
    from sagecraft.serving.request_format import RequestFormats

    formats = RequestFormats(installed_plugins().content_types, ServingSettings.from_environment({}))
    assert formats.of({"Content-Type": f"{alias}; charset=utf-8"}).content_type == media_types.canonical(
        alias
    )
