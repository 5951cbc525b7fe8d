"""Secret redaction, applied to payloads and failure details before they are stored.

Two rules: a value under a key named like a secret is replaced whole, and
anything inside a string that is shaped like a credential (bearer tokens,
``sk-...``, ``ghp_...``, ``AKIA...``, ``xox?-...``, PEM private keys,
``password=...``) is replaced in place. The raw value never reaches the store,
the log, an API answer or a stream frame, because nothing else ever sees it.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "[REDACTED]"

SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)|secret|token|api[-_]?key|authorization|credential|"
    r"private[-_]?key|access[-_]?key|cookie|^(pwd|auth|session[-_]?id)$",
    re.IGNORECASE,
)

_SHAPES = [
    re.compile(
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
        re.DOTALL,
    ),
    re.compile(r"\b(bearer|basic|token)\s+[A-Za-z0-9\-._~+/]{8,}=*", re.IGNORECASE),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{16,}"),
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"),
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    re.compile(r"\bxox[abposr]-[A-Za-z0-9\-]{8,}"),
    re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]+"),
]
_ASSIGNMENT = re.compile(
    r"(?P<key>\b(?:pass(?:word|wd|phrase)?|pwd|secret|token|api[-_]?key|apikey|"
    r"authorization|access[-_]?key|private[-_]?key)\b[\"']?\s*[=:]\s*)"
    r"(?P<value>\"[^\"]*\"|'[^']*'|[^\s,;&\"'}]+)",
    re.IGNORECASE,
)


def redact_text(text: str) -> str:
    """``text`` with every credential-shaped part replaced by ``[REDACTED]``."""
    for shape in _SHAPES:
        text = shape.sub(REDACTED, text)
    return _ASSIGNMENT.sub(lambda m: m.group("key") + REDACTED, text)


def redact(value: Any) -> Any:
    """A copy of a JSON value with secrets replaced, at any depth."""
    if isinstance(value, dict):
        return {
            key: REDACTED if SECRET_KEY.search(str(key)) else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item) for item in value]
    if isinstance(value, str):
        return redact_text(value)
    return value
