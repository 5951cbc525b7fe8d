"""Case 6: framing and UTF-8 violations get 1002/1007 at once; other clients keep going."""

from __future__ import annotations

import struct

import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import LoopingCall

from tests.hardening import raw
from tests.hardening.report import record
from tests.support import post_json, wait_for
from tests.wsclient import WSClient
from tests.wsraw import OP_CLOSE, OP_CONTINUATION, OP_PING, OP_TEXT, frame

PING = b'{"type":"ping"}'
VIOLATIONS = [
    ("unmasked frame", frame(OP_TEXT, PING, masked=False), 1002),
    ("RSV1", frame(OP_TEXT, PING, rsv=4), 1002),
    ("RSV2", frame(OP_TEXT, PING, rsv=2), 1002),
    ("RSV3", frame(OP_TEXT, PING, rsv=1), 1002),
    ("reserved opcode 3", frame(3, PING), 1002),
    ("reserved opcode 7", frame(7, PING), 1002),
    ("reserved opcode 0xB", frame(0xB, b""), 1002),
    ("reserved opcode 0xF", frame(0xF, b""), 1002),
    ("126-byte ping", frame(OP_PING, b"x" * 126), 1002),
    ("fragmented ping", frame(OP_PING, b"x", fin=False), 1002),
    ("stray continuation", frame(OP_CONTINUATION, PING), 1002),
    ("text inside a fragmented message",
     frame(OP_TEXT, b'{"type":', fin=False) + frame(OP_TEXT, b'"ping"}'), 1002),
    ("invalid UTF-8", frame(OP_TEXT, b'{"type":"\xff"}'), 1007),
    ("invalid UTF-8 split across fragments",
     frame(OP_TEXT, b'{"type":"ping","x":"\xe2\x82', fin=False)
     + frame(OP_CONTINUATION, b'\x28"}'), 1007),
    ("UTF-8 cut at the message end",
     frame(OP_TEXT, b'"\xe2\x82', fin=False) + frame(OP_CONTINUATION, b""), 1007),
]  # fmt: skip
# Autobahn answers a malformed close frame by queueing its 1002/1007 and then, taking the
# bad frame for the peer's reply, aborting the TCP connection, which discards that frame:
# these only have to end the connection at once.
BAD_CLOSE_FRAMES = [
    ("close code 999", frame(OP_CLOSE, struct.pack("!H", 999))),
    ("close with 1 byte", frame(OP_CLOSE, b"\x03")),
    ("invalid UTF-8 close reason", frame(OP_CLOSE, struct.pack("!H", 1000) + b"\xc3\x28")),
]


@pytest_twisted.ensureDeferred
async def test_protocol_violations_close_at_once_while_others_receive(daemons):
    """Each violation gets its close code within 1.5 s; a watcher misses no delta meanwhile."""
    daemon = await daemons.start()
    port = daemon.port
    watcher = await WSClient.connect(daemon.url, "/ws/instances")
    snapshot = await watcher.frame()
    created = []

    def create() -> defer.Deferred:
        name = f"n{len(created)}"
        created.append(name)
        return defer.ensureDeferred(post_json(daemon.url + "/api/instances", {"name": name}))

    creating = LoopingCall(create)
    creating.start(0.05)

    split_euro = "€".encode()
    valid = await raw.open_stream(port, "/ws/instances")
    valid.client.write(
        frame(OP_TEXT, b'{"type":"ping","x":"' + split_euro[:1], fin=False)
        + frame(OP_CONTINUATION, split_euro[1:] + b'"}')
    )
    await valid.client.until(lambda c: any(m["type"] == "pong" for m in valid.frames().messages))

    took, wrong = {}, []
    for name, data, expected in VIOLATIONS + [(*bad, None) for bad in BAD_CLOSE_FRAMES]:
        stream, code, took[name] = await raw.provoke(port, data)
        if code != expected or took[name] > 1.5 or (code is None and not stream.client.closed):
            wrong.append((name, code, round(took[name], 3)))
        stream.client.abort()
    creating.stop()
    await wait_for(lambda: len(watcher.received) >= 1 + len(created), timeout=10)
    valid.client.abort()
    deltas = watcher.received[1:]
    assert [d["name"] for d in deltas] == created
    assert [d["seq"] for d in deltas] == list(
        range(snapshot["seq"] + 1, snapshot["seq"] + 1 + len(created))
    )
    await watcher.close()
    assert not wrong, wrong
    worst = max(took, key=took.get)
    record(
        "6 framing and UTF-8",
        f"{len(VIOLATIONS)} violations (unmasked, RSV1-3, reserved opcodes, 126-byte and "
        "fragmented pings, stray continuation, invalid UTF-8 incl. split across fragments) "
        f"and {len(BAD_CLOSE_FRAMES)} malformed close frames, each on its own stream",
        "1002 or 1007 for each violation (malformed close frames: TCP dropped, Autobahn "
        "discards its own 1002); a watcher received every delta in seq order meanwhile; "
        "no Unhandled Error in the daemon log",
        f"close within {took[worst] * 1000:.0f} ms at worst ({worst}); watcher got "
        f"{len(deltas)}/{len(created)} deltas, 0 gaps",
        close_ms={k: round(v * 1000, 1) for k, v in took.items()},
    )
