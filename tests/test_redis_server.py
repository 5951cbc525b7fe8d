"""The test Redis itself: a real server that answers, restarts with its data, and freezes."""

from __future__ import annotations

import pytest

from tests.redis import RedisServer, ping


def test_shared_server_answers(redis_url: str, redis_server: RedisServer) -> None:
    """The session server answers PONG on loopback and starts empty for each test."""
    assert redis_url.startswith("redis://127.0.0.1:")
    assert ping(redis_server.port)
    redis_server.command("SET", "k", "v")
    assert redis_server.command("DBSIZE") == b":1\r\n"


def test_private_server_restarts_with_its_data(private_redis: RedisServer) -> None:
    """A private server stopped with SHUTDOWN SAVE comes back with its keys."""
    private_redis.command("SET", "kept", "yes")
    private_redis.stop()
    assert not ping(private_redis.port)
    private_redis.start()
    assert private_redis.command("GET", "kept") == b"$3\r\nyes\r\n"


def test_a_server_that_cannot_start_says_why(redis_server: RedisServer) -> None:
    """Starting on a port another server holds fails at once with what redis-server said."""
    clash = RedisServer(redis_server.binary, port=redis_server.port)
    try:
        with pytest.raises(RuntimeError, match="(?s)did not answer.*[Aa]ddress already in use"):
            clash.start()
    finally:
        clash.close()


async def test_a_server_starts_without_holding_the_reactor(private_redis: RedisServer) -> None:
    """start_async returns once the server said it is ready, with its data."""
    private_redis.command("SET", "kept", "yes")
    await private_redis.stop_async()
    await private_redis.start_async()
    assert private_redis.command("GET", "kept") == b"$3\r\nyes\r\n"
