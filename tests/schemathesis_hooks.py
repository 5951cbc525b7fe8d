"""Schemathesis hooks for the contract fuzzing of ``/api/`` (tests/schemathesis.toml loads them).

Two adjustments before every request, neither of which changes whether the request
conforms to the document:

- A long poll's ``wait`` within its bounds is sent as at most 1 s: a valid ``wait`` on an
  existing instance holds the request that long (up to 60 s), which no bounded run affords.
  Out-of-range values are sent as they are, so their 400 is still checked.
- A JSON number with no fraction (``4.0``) is sent as an integer (``4``). JSON Schema counts
  ``4.0`` as an integer, so the document cannot tell them apart, but the server refuses a
  float where it wants an integer (a 400 for ``hop_count: 4.0``), a known strictness the
  fuzzer would otherwise report as a valid request refused.
"""

from __future__ import annotations

from typing import Any

import schemathesis

from cpstream.domain.inbox import MAX_WAIT

FUZZ_WAIT = 1


def integral(value: Any) -> Any:
    """``value`` with every float that has no fraction made an int, at any depth."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: integral(item) for key, item in value.items()}
    if isinstance(value, list):
        return [integral(item) for item in value]
    return value


def short_wait(value: Any) -> Any:
    """A ``wait`` the server reads as 2..MAX_WAIT seconds, as :data:`FUZZ_WAIT`; anything else
    unchanged. It is read as the server reads it: ``int()`` of its bytes (``int_arg``)."""
    try:
        seconds = int(str(value).encode("utf-8"))
    except ValueError:
        return value
    return FUZZ_WAIT if FUZZ_WAIT < seconds <= MAX_WAIT else value


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    query = case.query
    if isinstance(query, dict) and "wait" in query:
        wait = query["wait"]
        query["wait"] = (
            [short_wait(w) for w in wait] if isinstance(wait, list) else short_wait(wait)
        )
    body = getattr(case, "body", None)
    if isinstance(body, dict | list):
        case.body = integral(body)
