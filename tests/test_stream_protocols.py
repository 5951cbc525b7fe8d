"""Stream protocols without sockets: iosim transports, time on a task.Clock.

Autobahn's own handshake timers run on txaio's global loop, so they are
turned off here (timeouts 0); everything else (idle timeout, batching, the
500 ms poll) runs on the Clock.
"""

from __future__ import annotations

import json

import pytest
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.test import iosim

from cpstream.domain.hub import Hub
from cpstream.domain.registry import Registry
from cpstream.streams.connections import Streams
from cpstream.streams.hubstreams import (
    InstancesFactory,
    InstancesProtocol,
    MessagesFactory,
    MessagesProtocol,
)
from cpstream.streams.logstream import LogsFactory, LogsProtocol
from cpstream.streams.settings import StreamSettings, prepare_frame
from tests.support import World


class Client(WebSocketClientProtocol):
    def onConnect(self, response):  # noqa: N802 (Autobahn API)
        self.frames = []
        self.close = None

    def onMessage(self, payload, isBinary):  # noqa: N802 (Autobahn API)
        self.frames.append(json.loads(payload))

    def onClose(self, wasClean, code, reason):  # noqa: N802 (Autobahn API)
        self.close = (self.remoteCloseCode, self.remoteCloseReason)


class Wire(World):
    """The shared world, with stream protocols connected over iosim pumps."""

    def __init__(self, tmp_path) -> None:
        super().__init__(tmp_path)
        self.pumps = []

    def factory(self, protocol):
        if protocol is InstancesProtocol:
            return InstancesFactory(self.streams, self.hub, self.registry)
        if protocol is MessagesProtocol:
            return MessagesFactory(self.streams, self.messages_hub, self.messaging)
        return LogsFactory(self.streams, self.registry, self.logs, self.tails)

    def connect(self, protocol, path):
        server = self.factory(protocol).buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        client_factory = WebSocketClientFactory(f"ws://127.0.0.1:18800{path}")
        client_factory.protocol = Client
        client_factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0)
        client = client_factory.buildProtocol(None)
        pump = iosim.connect(
            server,
            iosim.makeFakeServer(server),
            client,
            iosim.makeFakeClient(client),
        )
        self.pumps.append(pump)
        return server, client, pump

    def log_viewer(self, name):
        """An instance with an empty log file, and a viewer connected to its stream."""
        path = self.logs.path(self.registry.create(name))
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")
        return (path, *self.connect(LogsProtocol, f"/ws/instances/{name}/logs"))

    def advance(self, seconds, step=0.05):
        steps = round(seconds / step)
        for _ in range(steps):
            self.clock.advance(step)
            for pump in self.pumps:
                pump.flush()


def without_cursors(frames: list[dict]) -> list[dict]:
    return [{k: v for k, v in f.items() if k != "cursor"} for f in frames]


@pytest.fixture
def world(tmp_path):
    made = Wire(tmp_path)
    yield made
    made.close()


def test_idle_connection_is_closed_after_the_timeout(world):
    """90 s without a client frame closes with 1001 'idle timeout'."""
    server, client, pump = world.connect(InstancesProtocol, "/ws/instances")
    assert client.frames[0]["type"] == "snapshot"
    world.advance(89.9, step=0.1)
    assert client.close is None
    world.advance(1.1, step=0.1)
    assert client.close == (1001, "idle timeout")


def test_every_inbound_frame_resets_the_idle_timer(world):
    """Pings (application and WebSocket level) keep a connection alive."""
    server, client, pump = world.connect(InstancesProtocol, "/ws/instances")
    for _ in range(3):
        world.advance(60, step=1)
        client.sendMessage(json.dumps({"type": "ping"}).encode())
        pump.flush()
    world.advance(60, step=1)
    client.sendPing(b"x")
    pump.flush()
    world.advance(60, step=1)
    assert client.close is None
    assert [f["type"] for f in client.frames].count("pong") == 3
    world.advance(31, step=1)
    assert client.close == (1001, "idle timeout")


def test_log_lines_are_batched_in_a_100ms_window(world):
    """Lines written close together arrive in one frame, 100 ms after the first is seen."""
    path, server, client, pump = world.log_viewer("a")
    assert without_cursors(client.frames) == [{"type": "backlog", "lines": [], "count": 0}]
    with open(path, "ab") as f:
        f.write(b"one\n")
    world.advance(0.5)
    with open(path, "ab") as f:
        f.write(b"two\nthree\n")
    server._pump()
    world.advance(0.05)
    assert len(client.frames) == 1
    world.advance(0.05)
    assert without_cursors(client.frames[1:]) == [
        {"type": "lines", "lines": ["one", "two", "three"], "count": 3}
    ]


def test_partial_lines_wait_for_their_newline(world):
    """A line without its newline is held back until it is complete."""
    path, server, client, pump = world.log_viewer("a")
    with open(path, "ab") as f:
        f.write(b"half a li")
    world.advance(1.0)
    assert len(client.frames) == 1
    with open(path, "ab") as f:
        f.write(b"ne\n")
    world.advance(1.0)
    assert client.frames[1]["lines"] == ["half a line"]


def test_viewer_leaving_with_a_batch_pending(world):
    """A viewer that disconnects mid-batch leaves no timer, no watcher and no error."""
    path, server, client, pump = world.log_viewer("a")
    with open(path, "ab") as f:
        f.write(b"pending\n")
    world.advance(0.5, step=0.5)
    assert server._batch == ["pending"] and server._timer is not None
    client.transport.loseConnection()
    pump.flush()
    assert world.tails.watching == 0
    assert world.clock.getDelayedCalls() == []
    assert world.streams.connections == set()


def test_a_paused_log_viewer_reads_nothing_and_loses_nothing(world):
    """While paused a viewer leaves its offset alone; on resume it catches up exactly."""
    path, server, client, pump = world.log_viewer("a")
    server.pauseProducing()
    with open(path, "ab") as f:
        f.write(b"".join(b"line %d\n" % i for i in range(5000)))
    world.advance(2.0)
    assert server._cursor.offset == 0 and server._batch == []
    server.resumeProducing()
    world.advance(1.0)
    lines = [line for f in client.frames[1:] for line in f["lines"]]
    assert lines == [f"line {i}" for i in range(5000)]
    assert all(f["count"] <= 2000 for f in client.frames[1:])


def test_pings_while_paused_are_answered_once_on_resume(world):
    """A client that pings but never reads cannot grow the server's buffer with pongs."""
    server, client, pump = world.connect(InstancesProtocol, "/ws/instances")
    server.pauseProducing()
    for _ in range(100):
        client.sendMessage(json.dumps({"type": "ping"}).encode())
    pump.flush()
    assert [f["type"] for f in client.frames] == ["snapshot"]
    server.resumeProducing()
    pump.flush()
    assert [f["type"] for f in client.frames] == ["snapshot", "pong"]


def test_a_client_paused_for_a_minute_is_aborted(world):
    """A transport that stays paused for 60 s is aborted; its reconnect gets a snapshot."""
    server, client, pump = world.connect(InstancesProtocol, "/ws/instances")
    server.pauseProducing()
    world.advance(59, step=1)
    assert world.streams.connections == {server}
    world.advance(2, step=1)
    assert world.streams.connections == set()


def test_uncompressed_subscribers_are_written_the_shared_frame_bytes(world):
    """Each hub event is framed once: every subscriber's transport gets the same bytes object."""
    written = []
    servers = []
    for _ in range(2):
        server, client, pump = world.connect(InstancesProtocol, "/ws/instances")
        servers.append(server)
        write = server.transport.write
        server.transport.write = lambda data, write=write: (written.append(data), write(data))
        server.sendMessage = lambda *a, **k: pytest.fail("an event was framed per connection")
    world.hub.publish({"type": "instance_archived", "name": "x", "seq": 1, "timestamp": "t"})
    world.advance(0.1)
    assert len(written) == 2 and written[0] is written[1]
    assert all(s.websocket_extensions_in_use == [] for s in servers)


def test_autobahn_handshake_timeouts_run_on_the_injected_clock(tmp_path):
    """A client that never finishes its opening handshake is dropped after 5 s of the
    Clock: Autobahn's own timers run on the injected reactor, not txaio's global loop."""
    world = Wire(tmp_path)
    world.streams = Streams(world.clock, settings=StreamSettings(open_handshake_timeout=5.0))
    server = world.factory(InstancesProtocol).buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    transport = StringTransport()
    transport.registerProducer(server, True)  # as Twisted Web's channel is, under the resource
    server.makeConnection(transport)
    server.dataReceived(b"GET /ws/instances HTTP/1.1\r\nHost: 127.0.0.1:18800\r\n")
    world.clock.advance(4.9)
    assert not transport.disconnecting
    world.clock.advance(0.2)
    assert transport.disconnecting or transport.disconnected
    world.close()


def coalescing(world) -> None:
    """Give the world a hub with the product's coalescing window (bursts queue up)."""
    world.hub = Hub(world.clock, prepare=prepare_frame)
    world.registry = Registry(world.store, world.hub, world.clock, ["agent"])


def deltas_after(frames: list[dict], index: int) -> list[int]:
    return [f["seq"] for f in frames[index + 1 :] if f["type"] != "snapshot"]


def test_a_reading_client_hit_by_a_burst_is_resynced_at_once(world):
    """300 events in one window overflow a client that keeps reading: it gets a resync
    snapshot (reason lagged) at the flush, current to the last event, and deltas go on
    from it with no gap."""
    coalescing(world)
    a = world.registry.create("a")
    server, client, pump = world.connect(InstancesProtocol, "/ws/instances")
    for n in range(300):
        world.registry.set_status(a, "running" if n % 2 else "unhealthy", pid=n + 1)
    world.advance(0.1, step=0.01)
    resyncs = [i for i, f in enumerate(client.frames) if f.get("resync")]
    assert len(resyncs) == 1
    resync = client.frames[resyncs[0]]
    assert resync["reason"] == "lagged" and resync["seq"] == world.hub.seq
    assert resync["instances"][0]["pid"] == 300
    world.registry.set_status(a, "stopped")
    world.advance(0.1, step=0.01)
    assert deltas_after(client.frames, resyncs[0]) == [resync["seq"] + 1]
    assert not server._subscription.lagged


def test_no_data_frame_follows_our_close_frame(world):
    """Once the server has sent its Close frame, deltas published meanwhile are not sent."""
    a = world.registry.create("a")
    server, client, pump = world.connect(InstancesProtocol, "/ws/instances")
    server.close_going_away("server shutdown")
    world.registry.set_status(a, "starting", pid=1)
    server.pong()
    pump.flush()
    assert [f["type"] for f in client.frames] == ["snapshot"]
    assert client.close == (1001, "server shutdown")


def test_resume_replays_what_was_missed_then_goes_live(world):
    """?since=S&epoch=E: a resumed frame, the missed events with their own seq and
    timestamp, then live ones; no duplicate, no gap."""
    a = world.registry.create("a")
    epoch = world.registry.history.epoch
    world.registry.set_status(a, "starting", pid=1)
    since = world.hub.seq
    world.registry.set_status(a, "running", pid=1)
    world.registry.create("b")
    missed = world.instance_frames.frames[-2:]
    server, client, pump = world.connect(
        InstancesProtocol, f"/ws/instances?since={since}&epoch={epoch}"
    )
    world.registry.set_status(a, "stopping", pid=1)
    pump.flush()
    assert client.frames[0] == {"type": "resumed", "since": since, "seq": since + 2, "epoch": epoch}
    assert client.frames[1:3] == missed
    assert [f["seq"] for f in client.frames[1:]] == [since + 1, since + 2, since + 3]


@pytest.mark.parametrize(
    ("query", "reason"),
    [("since=0&epoch=other", "epoch"), ("since=99&epoch={epoch}", "future"), ("since=0", "epoch")],
)
def test_a_resume_that_cannot_replay_gets_a_resync_snapshot(world, query, reason):
    """Another epoch or a seq from the future: a snapshot with resync and the reason."""
    world.registry.create("a")
    query = query.format(epoch=world.registry.history.epoch)
    server, client, pump = world.connect(InstancesProtocol, f"/ws/instances?{query}")
    first = client.frames[0]
    assert first["type"] == "snapshot" and first["resync"] and first["reason"] == reason
    assert first["epoch"] == world.registry.history.epoch


def test_a_since_that_is_not_an_integer_is_a_bad_request(world):
    """?since=abc: error bad_request, then close 4400."""
    server, client, pump = world.connect(InstancesProtocol, "/ws/messages?since=abc")
    assert client.frames[0]["code"] == "bad_request" and client.close[0] == 4400


def test_the_log_stream_resumes_from_a_cursor(world):
    """?cursor=C: backlog with resumed true and no lines, then the lines after C."""
    path, server, client, pump = world.log_viewer("a")
    with open(path, "ab") as f:
        f.write(b"one\ntwo\n")
    world.advance(1.0)
    assert client.frames[-1]["lines"] == ["one", "two"]
    cursor = client.frames[-1]["cursor"]
    client.transport.loseConnection()
    pump.flush()
    with open(path, "ab") as f:
        f.write(b"three\n")
    server, client, pump = world.connect(LogsProtocol, f"/ws/instances/a/logs?cursor={cursor}")
    world.advance(1.0)
    assert client.frames[0]["resumed"] is True and client.frames[0]["lines"] == []
    assert [line for f in client.frames[1:] for line in f["lines"]] == ["three"]


def test_a_cursor_that_is_not_ours_is_a_bad_request(world):
    """?cursor=garbage: error bad_request, then close 4400."""
    world.log_viewer("a")
    server, client, pump = world.connect(LogsProtocol, "/ws/instances/a/logs?cursor=garbage")
    assert client.frames[-1]["code"] == "bad_request" and client.close[0] == 4400
