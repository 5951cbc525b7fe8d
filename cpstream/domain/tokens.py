"""Secrets: the operator token on disk, agent tokens, and comparing them safely.

The operator token is 256 random bits, URL-safe, written once to
``DATA/operator.token`` (mode 0600) and reused; deleting the file and restarting
the daemon rotates it. Agent tokens are stored only as their SHA-256.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

TOKEN_BYTES = 32


def new_token() -> str:
    """A fresh URL-safe token of 256 random bits that does not begin with ``-``: one
    that did (1 in 64) would be read as an option on a command line (``cpstream --token
    -Xy...`` fails in argparse), so such a draw is discarded."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    while token.startswith("-"):
        token = secrets.token_urlsafe(TOKEN_BYTES)
    return token


def hash_token(token: str) -> str:
    """What is stored of an agent token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same(given: str, expected: str) -> bool:
    """Compare two secrets in constant time."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def operator_token(path: Path) -> str:
    """The operator token at ``path``: created (mode 0600) on first start, reused after."""
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    if token:
        return token
    path.parent.mkdir(parents=True, exist_ok=True)
    token = new_token()
    spare = path.with_name(path.name + ".tmp")
    fd = os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(spare, 0o600)
    spare.rename(path)
    return token
