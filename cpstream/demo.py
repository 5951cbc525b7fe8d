"""What ``--demo`` creates on an empty data dir: two demo agents, started."""

from __future__ import annotations

import sys

from twisted.logger import Logger

from cpstream.domain.registry import Registry
from cpstream.domain.routing import RoutingRules
from cpstream.domain.supervisor import Supervisor

log = Logger()


# agent-1 hands tasks and numbered reports to agent-2, burns 35 % of a core for 5 s every
# 15 s and holds 256 KiB more every 10 s (up to 16 MiB, then lets go); agent-2 fails every
# third report for good (its rule allows one retry: a dead letter within seconds) and the
# next one once (a retry that succeeds).
FIRST = [
    *("--send-to", "agent-2", "--report-to", "agent-2"),
    *("--burn-every", "15", "--grow-every", "10"),
]
SECOND = ["--flaky", "report."]


def seed_demo(registry: Registry, supervisor: Supervisor, rules: RoutingRules) -> None:
    """Create ``agent-1`` and ``agent-2``, let 1 hand tasks and reports to 2, start both:
    within a minute there is CPU and memory to watch, retries, and a dead letter.

    Does nothing when any instance exists already (the demo seeds, never resets).
    """
    if registry.all(include_archived=True):
        return
    agent = [sys.executable, "-m", "cpstream.agent"]
    first = registry.create("agent-1", command=[*agent, *FIRST])
    second = registry.create("agent-2", command=[*agent, *SECOND])
    rules.add("agent-1", "agent-2", "task.*")
    rules.add("agent-1", "agent-2", "report.*", max_retries=1)
    for instance in (first, second):
        supervisor.start(instance)
    log.info("demo: started agent-1 and agent-2")
