"""What ``--demo`` creates on an empty data dir: two demo agents, started."""

from __future__ import annotations

import sys

from twisted.logger import Logger

from cpstream.registry import Registry
from cpstream.supervisor import Supervisor

log = Logger()


def seed_demo(registry: Registry, supervisor: Supervisor) -> None:
    """Create ``agent-1`` and ``agent-2`` and start them, if no instance exists yet."""
    if registry.all(include_archived=True):
        return
    agent = [sys.executable, "-m", "cpstream.agent"]
    first = registry.create("agent-1", command=agent)
    second = registry.create("agent-2", command=agent)
    for instance in (first, second):
        supervisor.start(instance)
    log.info("demo: started agent-1 and agent-2")
