"""The demo agent as a real process."""

from __future__ import annotations

import os
import socket
import sys

import pytest_twisted
import treq
from twisted.internet import defer
from twisted.internet.protocol import ProcessProtocol

from tests.support import sleep


class Watched(ProcessProtocol):
    def __init__(self) -> None:
        self.ended: defer.Deferred = defer.Deferred()
        self.output = b""

    def childDataReceived(self, fd: int, data: bytes) -> None:  # noqa: N802 (Twisted API)
        self.output += data

    def processEnded(self, reason) -> None:  # noqa: N802 (Twisted API)
        self.ended.callback(reason.value.exitCode)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest_twisted.ensureDeferred
async def test_agent_serves_health_and_exits_when_its_control_plane_is_gone(reactor):
    """The agent answers /health, and exits by itself once its CP stays unreachable."""
    port, dead_cp = free_port(), free_port()
    env = dict(
        os.environ,
        CPSTREAM_INSTANCE="lonely",
        CPSTREAM_PORT=str(port),
        CPSTREAM_URL=f"http://127.0.0.1:{dead_cp}",
    )
    agent = Watched()
    argv = [sys.executable, "-m", "cpstream.agent", "--orphan-after", "2", "--no-receive"]
    reactor.spawnProcess(agent, sys.executable, argv, env=env)
    answers: list = []

    async def healthy() -> bool:
        try:
            response = await treq.get(f"http://127.0.0.1:{port}/health", timeout=1)
            answers.append(await response.json())
        except Exception:
            return False
        return True

    for _ in range(100):
        if await healthy():
            break
        await sleep(0.1)
    assert answers and answers[0] == {"status": "ok", "instance": "lonely"}
    code = await agent.ended.addTimeout(20, reactor)
    assert code == 0
    assert b"control plane unreachable" in agent.output
