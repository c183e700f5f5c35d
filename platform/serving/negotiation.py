"""Content negotiation: the answer's media type from a request's Accept header and the types
the server can write."""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import NotAcceptableError
from ..media_types import canonical


def _accept_entries(accept: str) -> list[str]:
    """The media ranges of an Accept header, best first (q-values honoured, q=0 dropped)."""
    ranked = []
    for position, entry in enumerate(accept.split(",")):
        parts = [p.strip() for p in entry.split(";")]
        if not parts[0]:
            continue
        quality = 1.0
        for parameter in parts[1:]:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            ranked.append((-quality, position, parts[0].lower()))
    return [media for _, _, media in sorted(ranked)]


def negotiate(accept: str | None, supported: Iterable[str], default: str) -> str:
    """The content type to answer with: the first acceptable supported type, or `default`."""
    supported = list(supported)
    if accept is None or not accept.strip():
        return default
    for entry in _accept_entries(accept):
        entry = canonical(entry)
        if entry == "*/*":
            return default
        if entry in supported:
            return entry
        if entry.endswith("/*"):
            family = entry[:-1]
            if default.startswith(family):
                return default
            for candidate in supported:
                if candidate.startswith(family):
                    return candidate
    raise NotAcceptableError(f"cannot answer with Accept: {accept[:200]}; supported: {', '.join(supported)}")
