"""Reference (a): a minimal asyncio server broadcasting with ``websockets.broadcast()``.

What a Python developer would pick instead of Twisted: the same frame shape
as cpstream's ``status_changed`` (built once per event), sent to every client.

    python -m bench.server_websockets
"""

from __future__ import annotations

import asyncio
import sys

import websockets
from websockets.asyncio.server import broadcast, serve

from bench.common import parse_command, reference_frame, rss_kib

CLIENTS: set = set()


async def handler(connection) -> None:
    CLIENTS.add(connection)
    try:
        await connection.send('{"type":"snapshot","instances":[],"seq":0}')
        async for _ in connection:
            pass
    except websockets.ConnectionClosed:
        pass
    finally:
        CLIENTS.discard(connection)


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def emit(count: int, interval: float, seq: list[int]) -> None:
    for n in range(count):
        seq[0] += 1
        broadcast(CLIENTS, reference_frame(seq[0], "running" if n % 2 else "unhealthy").decode())
        await asyncio.sleep(interval)
    say("done")


async def main() -> None:
    seq = [0]
    async with serve(handler, "127.0.0.1", 0, max_size=65536, ping_interval=None) as server:
        port = server.sockets[0].getsockname()[1]
        say(f"ready {port}")
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            command, args = parse_command(line)
            if command == "rate":
                await emit(args[0], 1.0 / args[1], seq)
            elif command == "burst":
                await emit(args[0], 0, seq)
            elif command == "rss":
                say(f"rss {rss_kib()}")
            elif command in ("quit", ""):
                return


if __name__ == "__main__":
    asyncio.run(main())
