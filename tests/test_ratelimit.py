"""The log rate limit."""

from __future__ import annotations

from twisted.internet.task import Clock

from cpstream.domain.ratelimit import Every


def test_yes_at_most_once_per_period():
    """The first call says yes, then no until the period has passed."""
    clock = Clock()
    every = Every(clock, 10)
    assert [every(), every()] == [True, False]
    clock.advance(9.9)
    assert every() is False
    clock.advance(0.1)
    assert [every(), every()] == [True, False]
