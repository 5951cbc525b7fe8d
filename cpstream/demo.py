"""What ``--demo`` creates on an empty data dir: two demo agents, started."""

from __future__ import annotations

import sys

from twisted.logger import Logger

from cpstream.domain.registry import Registry
from cpstream.domain.routing import RoutingRules
from cpstream.domain.supervisor import Supervisor

log = Logger()


def seed_demo(registry: Registry, supervisor: Supervisor, rules: RoutingRules) -> None:
    """Create ``agent-1`` and ``agent-2``, let 1 hand tasks to 2, and start both.

    Does nothing when any instance exists already (the demo seeds, never resets).
    """
    if registry.all(include_archived=True):
        return
    agent = [sys.executable, "-m", "cpstream.agent"]
    first = registry.create("agent-1", command=[*agent, "--send-to", "agent-2"])
    second = registry.create("agent-2", command=agent)
    rules.add("agent-1", "agent-2", "task.*")
    for instance in (first, second):
        supervisor.start(instance)
    log.info("demo: started agent-1 and agent-2")
