"""The domain's failures, each with a message safe to show an operator.

The web layer maps each kind to one HTTP status (``cpstream.web.errors``);
nothing in the domain knows those statuses.
"""

from __future__ import annotations


class DomainError(Exception):
    """A request the domain refuses; ``message`` says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(DomainError):
    """The thing named does not exist."""


class Invalid(DomainError):
    """The request is malformed or breaks a rule about values."""


class Conflict(DomainError):
    """The request clashes with the current state (a taken name, a wrong status)."""


class Forbidden(DomainError):
    """The request is well formed but not allowed (no routing rule, say)."""


class TooLarge(DomainError):
    """A value is over its size limit."""
