"""``/metrics`` and ``/api/messages/stats`` from a real daemon, over a real socket."""

from __future__ import annotations

import pytest_twisted
import treq
from prometheus_client.parser import text_string_to_metric_families

from cpstream.domain.messaging import STATUSES
from tests.support import (
    agent_token,
    auth_headers,
    create,
    get_json,
    post_json,
    sleep,
)
from tests.wsclient import WSClient

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(url: str) -> tuple[set[str], Samples]:
    """The families and every sample of one scrape, parsed by prometheus_client."""
    response = await treq.get(f"{url}/metrics", headers=auth_headers(url))
    assert response.code == 200
    assert response.headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain")
    text = (await response.content()).decode()
    families, samples = set(), {}
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return families, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def lease(url: str, name: str) -> dict:
    code, body = await get_json(f"{url}/api/instances/{name}/messages/pending")
    assert code == 200 and body["message"], body
    return body["message"]


async def wait_for_running(url: str, *names: str) -> None:
    for _ in range(100):
        code, listed = await get_json(f"{url}/api/instances")
        if all(i["status"] == "running" for i in listed if i["name"] in names):
            return
        await sleep(0.1)
    raise AssertionError(f"not running: {listed}")


@pytest_twisted.ensureDeferred
async def test_metrics_move_with_real_actions(sampling_daemon):
    """Scraped and parsed: the families are there, and instances, messages (counters,
    gauges, latency histograms), streams and HTTP requests move after real actions; labels
    are route templates, never raw paths."""
    daemon = sampling_daemon
    url = daemon.url
    families, before = await scrape(url)
    for family in (
        "cpstream_instances",
        "cpstream_instance_restarts",
        "cpstream_crash_loops",
        "cpstream_messages",
        "cpstream_messages_sent",
        "cpstream_message_send_to_lease_seconds",
        "cpstream_message_lease_to_ack_seconds",
        "cpstream_stream_connections",
        "cpstream_stream_frames",
        "cpstream_stream_publish_to_write_seconds",
        "cpstream_log_tailed_bytes",
        "cpstream_http_requests",
        "process_cpu_seconds",
    ):
        assert family in families, family
    assert value(before, "cpstream_instances", status="running") == 0
    for name in ("a", "b"):
        await create(url, name)
        assert (await post_json(f"{url}/api/instances/{name}/start"))[0] == 200
    rule = {"from_instance": "a", "to_instance": "b", "type_pattern": "t.*", "max_retries": 0}
    assert (await post_json(f"{url}/api/routing-rules", rule))[0] == 201
    for _ in range(2):
        body = {"from_instance": "a", "to_instance": "b", "message_type": "t.x"}
        assert (await post_json(f"{url}/api/messages", body))[0] == 201
    first, second = await lease(url, "b"), await lease(url, "b")
    ack = {"lease_id": first["lease_id"]}
    assert (await post_json(f"{url}/api/messages/{first['id']}/acknowledge", ack))[0] == 200
    fail = {"lease_id": second["lease_id"], "detail": "no"}
    assert (await post_json(f"{url}/api/messages/{second['id']}/fail", fail))[0] == 200
    await get_json(f"{url}/api/no/such/thing")
    await wait_for_running(url, "a", "b")
    client = await WSClient.connect(url, "/ws/instances")
    await client.frame_of("snapshot")
    await client.frame_of("usage_changed")
    try:
        _, after = await scrape(url)
    finally:
        await client.close()
    assert value(after, "cpstream_instances", status="running") == 2
    assert value(after, "cpstream_instance_restarts_total", instance="a") == 0
    assert value(after, "cpstream_instance_rss_bytes", instance="a") > 0
    assert ("cpstream_instance_cpu_seconds_total", (("instance", "a"),)) in after
    assert value(after, "cpstream_messages_sent_total") == 2
    assert value(after, "cpstream_messages_leased_total") == 2
    assert value(after, "cpstream_messages_acknowledged_total") == 1
    assert value(after, "cpstream_messages_failed_total") == 1
    assert value(after, "cpstream_messages_dead_lettered_total") == 1
    assert value(after, "cpstream_messages", status="dead_letter") == 1
    assert value(after, "cpstream_messages", status="acknowledged") == 1
    assert value(after, "cpstream_message_send_to_lease_seconds_count") == 2
    assert value(after, "cpstream_message_lease_to_ack_seconds_count") == 1
    assert value(after, "cpstream_stream_connections", kind="instances") == 1
    assert value(after, "cpstream_stream_frames_total", kind="instances") >= 2
    assert value(after, "cpstream_stream_bytes_total", kind="instances") > 100
    assert value(after, "cpstream_stream_publish_to_write_seconds_count") >= 1
    assert value(after, "cpstream_http_requests_total", route="/api/messages", code="201") == 2
    start = "/api/instances/{name}/start"
    assert value(after, "cpstream_http_requests_total", route=start, code="200") == 2
    assert value(after, "cpstream_http_requests_total", route="other", code="404") == 1
    routes = {dict(labels).get("route") for _, labels in after} - {None}
    assert not any("/a/" in route or route.endswith("/a") for route in routes), routes


@pytest_twisted.ensureDeferred
async def test_metrics_need_the_operator(sampling_daemon):
    """/metrics wants the operator's token (or session): none is 401, an agent's is 403."""
    daemon = sampling_daemon
    url = daemon.url
    response = await treq.get(f"{url}/metrics")
    assert response.code == 401
    await create(url, "a")
    assert (await post_json(f"{url}/api/instances/a/start"))[0] == 200
    token = await agent_token(daemon.data_dir, "a")
    response = await treq.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.code == 403
    assert (await response.json())["error"]
    response = await treq.post(f"{url}/metrics", headers=auth_headers(url))
    assert response.code == 405


@pytest_twisted.ensureDeferred
async def test_message_stats_count_every_status(sampling_daemon):
    """Every status is listed (zeros included); in flight is queued, delivered and waiting
    for a retry; dead letters are counted on their own."""
    daemon = sampling_daemon
    url = daemon.url
    code, empty = await get_json(f"{url}/api/messages/stats")
    assert code == 200
    assert empty == {"by_status": dict.fromkeys(STATUSES, 0), "in_flight": 0, "dead_letter": 0}
    for name in ("a", "b"):
        await create(url, name)
    rule = {"from_instance": "a", "to_instance": "b", "type_pattern": "t.*", "max_retries": 0}
    assert (await post_json(f"{url}/api/routing-rules", rule))[0] == 201
    for _ in range(3):
        body = {"from_instance": "a", "to_instance": "b", "message_type": "t.x"}
        assert (await post_json(f"{url}/api/messages", body))[0] == 201
    leased = await lease(url, "b")
    fail = {"lease_id": leased["lease_id"]}
    assert (await post_json(f"{url}/api/messages/{leased['id']}/fail", fail))[0] == 200
    await lease(url, "b")
    code, stats = await get_json(f"{url}/api/messages/stats")
    assert stats["by_status"] == {**dict.fromkeys(STATUSES, 0), "queued": 1, "delivered": 1,
                                  "dead_letter": 1}  # fmt: skip
    assert (stats["in_flight"], stats["dead_letter"]) == (2, 1)
