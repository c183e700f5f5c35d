"""What an invocation's headers ask for: the body's content type, the answer's, and the output kind.

Clients send the same few header values again and again, and parsing them (media types, Accept's
ranking, the output parameter) costs more than predicting a row with the flat trees; so each
distinct set of values is parsed once and remembered. A header that fails is never remembered: it
raises its error every time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..content_registry import ContentTypeRegistry
from ..environment import ServingSettings
from ..errors import BadRequestError
from ..media_types import CSV, media_type
from .negotiation import negotiate
from .outputs import requested_output

CONTENT_TYPE = "Content-Type"
ACCEPT = "Accept"
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
TARGET_MODEL = "X-Amzn-SageMaker-Target-Model"
MAX_HEADER_CHARS = 1024
# Distinct header sets remembered; past this the memory starts afresh (custom attributes may carry
# a value per request, such as a trace id).
MAX_REMEMBERED = 512


@dataclass(frozen=True, slots=True)
class RequestFormat:
    content_type: str  # the body's, bare and lower-case, aliases resolved
    accept: str  # the answer's
    output: str | None  # the output kind chosen (sagecraft.outputs); None: the model's default


def check_header_length(name: str, value: str | None) -> None:
    """SageMaker passes these headers through with a limit of 1024 characters; so do we."""
    if value is not None and len(value) > MAX_HEADER_CHARS:
        raise BadRequestError(
            f"the {name} header has {len(value)} characters; the limit is {MAX_HEADER_CHARS}"
        )


class RequestFormats:
    """Resolves, and remembers, the RequestFormat of each distinct set of header values."""

    def __init__(self, types: ContentTypeRegistry, settings: ServingSettings) -> None:
        self.types = types
        self.settings = settings
        self.known: dict[tuple[str | None, str | None, str | None], RequestFormat] = {}

    def of(self, headers: Mapping[str, str]) -> RequestFormat:
        """The request's format; a typed error (400, 406, 415) when its headers cannot be served."""
        key = (headers.get(CONTENT_TYPE), headers.get(ACCEPT), headers.get(CUSTOM_ATTRIBUTES))
        found = self.known.get(key)
        if found is None:
            found = self._resolve(*key)
            if len(self.known) >= MAX_REMEMBERED:
                self.known.clear()
            self.known[key] = found
        return found

    def _resolve(
        self, content_type_header: str | None, accept_header: str | None, attributes: str | None
    ) -> RequestFormat:
        for name, value in (
            (CONTENT_TYPE, content_type_header),
            (ACCEPT, accept_header),
            (CUSTOM_ATTRIBUTES, attributes),
        ):
            check_header_length(name, value)
        # Absent Content-Type: CSV, the format of the R example and of SageMaker's tabular
        # algorithms.
        content_type = media_type(content_type_header) or CSV
        types, settings = self.types, self.settings
        types.check_decodable(content_type)
        default = settings.default_accept or (content_type if content_type in types.encoders else CSV)
        accept = negotiate(accept_header, types.encoders, media_type(default) or CSV)
        output = requested_output(attributes, accept_header, settings.default_output)
        return RequestFormat(content_type, accept, output)
