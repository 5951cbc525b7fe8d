"""Case 5: oversized WebSocket messages and HTTP bodies are refused early and cheaply."""

from __future__ import annotations

import json
import os

import pytest_twisted

from tests import wsraw
from tests.hardening import raw
from tests.hardening.conftest import Sampler, temp_bytes
from tests.hardening.report import record
from tests.support import global_reactor, instance_log, post_json, sleep

KIB, MIB = 1024, 1024 * 1024
LIMIT = 64 * KIB


def padded_ping(size: int) -> bytes:
    """A JSON ping of exactly ``size`` bytes."""
    bare = json.dumps({"type": "ping", "pad": ""}).encode()
    return json.dumps({"type": "ping", "pad": "x" * (size - len(bare))}).encode()


@pytest_twisted.ensureDeferred
async def test_oversized_websocket_messages_close_1009_quickly_and_cheaply(daemons):
    """64 KiB is accepted; 64 KiB + 1, 10 MiB, a 2^62 header, fragments over 64 KiB: 1009."""
    daemon = await daemons.start()
    port = daemon.port
    sampler = Sampler(daemon.pid)
    exact = await raw.open_stream(port, "/ws/instances")
    exact.client.write(wsraw.frame(wsraw.OP_TEXT, padded_ping(LIMIT)))
    await exact.client.until(lambda c: any(m["type"] == "pong" for m in exact.frames().messages))
    assert exact.frames().close_code is None

    attacks = {
        "64 KiB + 1": wsraw.frame(wsraw.OP_TEXT, padded_ping(LIMIT + 1)),
        "10 MiB": wsraw.frame(wsraw.OP_TEXT, padded_ping(10 * MIB)),
        "2^62 header": wsraw.frame(wsraw.OP_TEXT, b"x" * 1024, length=2**62),
        "2 x 40 KiB fragments": wsraw.frame(wsraw.OP_TEXT, b"x" * (40 * KIB), fin=False)
        + wsraw.frame(wsraw.OP_CONTINUATION, b"x" * (40 * KIB)),
    }
    took = {}
    for name, data in attacks.items():
        stream, code, took[name] = await raw.provoke(port, data, timeout=5)
        assert code == 1009, (name, code, stream.frames())
        stream.client.abort()
    await sleep(0.5)
    sampler.stop()
    exact.client.abort()
    assert max(took.values()) < 1.0, took
    assert sampler.growth_kib < 5 * 1024, sampler.growth_kib
    record(
        "5a oversize WebSocket",
        "messages of 64 KiB, 64 KiB + 1, 10 MiB, a frame header claiming 2^62 bytes, "
        "two 40 KiB fragments",
        "64 KiB answered (pong); every larger one closed with 1009",
        f"1009 after at most {max(took.values()) * 1000:.0f} ms; "
        f"peak RSS growth {sampler.growth_kib / 1024:.1f} MB",
        close_ms={k: round(v * 1000, 1) for k, v in took.items()},
        rss_growth_kib=sampler.growth_kib,
    )


@pytest_twisted.ensureDeferred
async def test_oversized_http_bodies_refused_from_their_declared_length(daemons, tmp_path):
    """1 MiB + 1 and 64 MiB declared bodies get 413 before a byte of body; no temp file grows."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    daemon = await daemons.start(TMPDIR=str(temp))
    port, host = daemon.port, f"127.0.0.1:{daemon.port}"
    sampler = Sampler(daemon.pid, temp)

    took = {}
    for name, length in (("1 MiB + 1", MIB + 1), ("64 MiB", 64 * MIB)):
        client = await raw.connect(port)
        sent_at = global_reactor.seconds()
        client.write(raw.json_post("/api/instances", host, ("Content-Length", str(length))))
        answer = await client.response(timeout=5)
        took[name] = global_reactor.seconds() - sent_at
        assert answer.status == 413 and "error" in answer.json(), answer
        await client.until(lambda c: c.closed, timeout=5)

    chunked = await raw.connect(port)
    chunked.write(raw.json_post("/api/instances", host, ("Transfer-Encoding", "chunked")))
    chunk = b"%x\r\n%s\r\n" % (64 * KIB, b" " * (64 * KIB))
    sent = 0
    while not chunked.data and not chunked.closed and sent < 8 * MIB:
        chunked.write(chunk)
        sent += 64 * KIB
        await sleep(0.005)
    answer = await chunked.response(timeout=5)
    assert answer.status == 413, answer
    chunked.abort()

    code, body = await post_json(
        daemon.url + "/api/instances", {"name": "ok", "env": {"PAD": "x" * (MIB - 100)}}
    )
    assert code == 201, body
    await sleep(0.3)
    sampler.stop()
    assert os.listdir(temp) == [] and temp_bytes(daemon.pid, temp) == 0
    assert max(took.values()) < 1.0, took
    record(
        "5b oversize HTTP body",
        "POST headers declaring 1 MiB + 1 and 64 MiB (no body sent); a chunked body streamed "
        "in 64 KiB chunks",
        "413 JSON and close on the headers alone; chunked refused once past 1 MiB; "
        "a 1 MiB body still accepted",
        f"413 within {max(took.values()) * 1000:.0f} ms of the headers; chunked refused after "
        f"{sent // KIB} KiB sent; temp files: peak {sampler.temp_peak // KIB} KiB while "
        "streaming, 0 left",
        refuse_ms={k: round(v * 1000, 1) for k, v in took.items()},
        chunked_sent_kib=sent // KIB,
        temp_peak_kib=sampler.temp_peak // KIB,
    )


@pytest_twisted.ensureDeferred
async def test_server_frames_over_64_kib_are_sent(daemons):
    """The 64 KiB limit is on client messages: a 200 KiB log backlog still goes out whole."""
    daemon = await daemons.start()
    await post_json(daemon.url + "/api/instances", {"name": "a"})
    log = instance_log(daemon.data_dir, "a")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_bytes(b"".join(b"%04d %s\n" % (n, b"x" * 200) for n in range(1000)))
    stream = await raw.open_stream(daemon.port, "/ws/instances/a/logs?backlog=1000")
    await stream.client.until(lambda c: stream.frames().messages, timeout=5)
    backlog = stream.frames().messages[0]
    stream.client.abort()
    assert backlog["type"] == "backlog" and backlog["count"] == 1000
    assert len(json.dumps(backlog)) > 200 * KIB
