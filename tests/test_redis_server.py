"""The test Redis itself: a real server that answers, restarts with its data, and freezes."""

from __future__ import annotations

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
