"""XGBoost's error messages made fit for a user: one line, without its source location."""

from __future__ import annotations

import re

# "[20:50:10] /workspace/src/c_api/c_api.cc:1532: " before the message itself.
_SOURCE_PREFIX = re.compile(r"^\[[\d:]+\] [^\s]+:\d+: ")


def xgboost_message(exc: Exception) -> str:
    """The first line of an XGBoostError (the rest is a native stack trace)."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return _SOURCE_PREFIX.sub("", first)
