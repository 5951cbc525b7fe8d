"""Routing rules: which instance may send which message types to which other.

A rule allows messages ``from_instance -> to_instance`` whose type matches
``type_pattern`` (exact, or ``prefix.*``) and sets their retries and TTL;
the most specific matching rule wins.
"""

from __future__ import annotations

import re
from typing import Any

from cpstream.domain.errors import Conflict, Forbidden, Invalid, NotFound
from cpstream.domain.frames import isotime
from cpstream.domain.ids import new_id
from cpstream.domain.instances import NAME_RE
from cpstream.domain.registry import Registry
from cpstream.domain.tables import DuplicateKey, RuleRows

# Matched in full (fullmatch): "$" would also match before a trailing newline.
TYPE_RE = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*")
PATTERN_RE = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*(\.\*)?")
DEFAULT_RETRIES = 5
DEFAULT_TTL = 3600
MAX_RETRIES = 100
MAX_TTL = 30 * 24 * 3600


def pattern_matches(pattern: str, message_type: str) -> bool:
    """Exact match, or ``prefix.*`` matching any type under ``prefix.``."""
    if pattern.endswith(".*"):
        return message_type.startswith(pattern[:-1])
    return pattern == message_type


def _specificity(rule: dict[str, Any]) -> tuple[int, int]:
    pattern = rule["type_pattern"]
    return (0 if pattern.endswith(".*") else 1, len(pattern))


def _bounded(key: str, value: Any, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise Invalid(f"{key} must be an integer from {low} to {high}")
    return value


class RoutingRules:
    """The allowlist of routes, stored; every send asks it for its rule."""

    def __init__(self, rows: RuleRows, registry: Registry, clock: Any) -> None:
        self._rows = rows
        self._registry = registry
        self._clock = clock
        self._routes: dict[tuple[str, str], list[dict[str, Any]]] | None = None

    def add(
        self,
        from_instance: str,
        to_instance: str,
        type_pattern: str,
        max_retries: int = DEFAULT_RETRIES,
        ttl_secs: int = DEFAULT_TTL,
    ) -> dict[str, Any]:
        """Allow messages from one instance to another whose type matches a pattern."""
        ends = {"from_instance": from_instance, "to_instance": to_instance}
        for key, value in ends.items():
            if "*" in value:
                raise Invalid(f"{key} cannot be a wildcard")
        if not PATTERN_RE.fullmatch(type_pattern):
            raise Invalid("type_pattern must be a type like 'task.handoff' or 'task.*'")
        for value in ends.values():
            self.check_instance(value)
        rule = {
            "id": new_id(),
            **ends,
            "type_pattern": type_pattern,
            "max_retries": _bounded("max_retries", max_retries, 0, MAX_RETRIES),
            "ttl_secs": _bounded("ttl_secs", ttl_secs, 1, MAX_TTL),
            "created_at": isotime(self._clock.seconds()),
        }
        try:
            self._rows.insert(rule)
        except DuplicateKey:
            raise Conflict("that routing rule already exists") from None
        self._routes = None
        return rule

    def all(self) -> list[dict[str, Any]]:
        return self._rows.all()

    def delete(self, rule_id: str) -> None:
        if not self._rows.delete(rule_id):
            raise NotFound(f"no routing rule {rule_id}")
        self._routes = None

    def check_instance(self, name: str) -> None:
        """:class:`NotFound` unless ``name`` is an active instance."""
        if not NAME_RE.fullmatch(name) or self._registry.find(name) is None:
            raise NotFound(f"No instance named '{name}'")

    def route(self, sender: str, recipient: str, message_type: str) -> dict[str, Any]:
        """The most specific rule allowing this message; :class:`Forbidden` if none does."""
        if self._routes is None:  # kept in memory: every send asks
            self._routes = {}
            for rule in self._rows.all():
                key = (rule["from_instance"], rule["to_instance"])
                self._routes.setdefault(key, []).append(rule)
        matching = [
            rule
            for rule in self._routes.get((sender, recipient), ())
            if pattern_matches(rule["type_pattern"], message_type)
        ]
        if not matching:
            raise Forbidden(f"no routing rule allows {message_type} from {sender} to {recipient}")
        return max(matching, key=_specificity)
