"""The formats of invocations, resolved from their headers and remembered."""

from __future__ import annotations

import pytest

from sagecraft.environment import ServingSettings
from sagecraft.errors import BadRequestError, NotAcceptableError, UnsupportedMediaTypeError
from sagecraft.plugins import installed_plugins
from sagecraft.serving.request_format import MAX_REMEMBERED, RequestFormat, RequestFormats


@pytest.fixture(scope="module")
def formats() -> RequestFormats:
    return RequestFormats(installed_plugins().content_types, ServingSettings.from_environment({}))


def test_a_format_is_resolved_once_per_set_of_header_values(formats: RequestFormats) -> None:
    headers = {
        "Content-Type": "text/csv; charset=utf-8",
        "Accept": "application/json;q=0.9, */*;q=0.1",
        "X-Amzn-SageMaker-Custom-Attributes": "output=probabilities",
    }
    first = formats.of(headers)
    assert first == RequestFormat("text/csv", "application/json", "probabilities")
    assert formats.of(dict(headers)) is first
    # Nothing chosen: None, the model's default answers (its label, or a built-in algorithm's).
    assert formats.of({}) == RequestFormat("text/csv", "text/csv", None)
    assert formats.of({"Content-Type": "application/jsonl"}) == RequestFormat(
        "application/jsonlines", "application/jsonlines", None
    )


@pytest.mark.parametrize(
    ("headers", "error", "phrase"),
    [
        ({"Content-Type": "application/xml"}, UnsupportedMediaTypeError, "application/xml"),
        ({"Accept": "image/png"}, NotAcceptableError, "image/png"),
        ({"X-Amzn-SageMaker-Custom-Attributes": "output=colour"}, BadRequestError, "colour"),
        ({"Accept": "text/csv;" + "x" * 1100}, BadRequestError, "the Accept header has 1109"),
    ],
)
def test_headers_that_cannot_be_served_fail_every_time_and_are_not_remembered(
    formats: RequestFormats,
    headers: dict[str, str],
    error: type[Exception],
    phrase: str,
) -> None:
    for _ in range(2):
        with pytest.raises(error, match=phrase):
            formats.of(headers)
    key = tuple(
        headers.get(name) for name in ("Content-Type", "Accept", "X-Amzn-SageMaker-Custom-Attributes")
    )
    assert key not in formats.known


def test_the_memory_of_formats_stays_bounded(formats: RequestFormats) -> None:
    for trace in range(3 * MAX_REMEMBERED):
        custom = f"trace={trace}"
        assert formats.of({"X-Amzn-SageMaker-Custom-Attributes": custom}).output is None
        assert len(formats.known) <= MAX_REMEMBERED
