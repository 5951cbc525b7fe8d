"""``GET /metrics``: the control plane in the Prometheus text exposition format.

Each daemon has its own ``CollectorRegistry`` (tests run several daemons in one
process). Almost everything is read when Prometheus scrapes: the instances and
their usage from the registry and the sampler, messages by status from the
store (one indexed ``GROUP BY``), open streams from the connection set, and the
counters the domain keeps as plain numbers on its
:class:`~cpstream.domain.meter.Meter`. Only the latency histograms are fed as
things happen (one observation per message lease, acknowledgement, or published
frame). Labels are bounded: statuses, stream kinds, route templates (never a raw
path), and instance names.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from twisted.web.resource import Resource

from cpstream.domain.instances import STATUSES as INSTANCE_STATUSES
from cpstream.domain.messaging import Messaging
from cpstream.domain.meter import Meter
from cpstream.domain.registry import Registry
from cpstream.domain.supervisor import Supervisor
from cpstream.domain.usage import UsageSampler
from cpstream.streams.connections import Streams
from cpstream.streams.settings import INSTANCES, LOGS, MESSAGES
from cpstream.web.errors import error_response

STREAM_KINDS = (INSTANCES, MESSAGES, LOGS)
# (metric name, help, the message event counted); sends are counted on their own.
MESSAGE_COUNTERS = (
    ("leased", "Messages leased (delivered) to a receiver", "delivered"),
    ("acknowledged", "Messages acknowledged", "acknowledged"),
    ("failed", "Deliveries failed (by the receiver, or a lease that expired)", "failed"),
    ("dead_lettered", "Messages dead-lettered (retries spent, or expired)", "dead_lettered"),
)
QUICK = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
QUEUED = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 3600.0)


class ControlPlaneCollector(Collector):
    """Reads the control plane's state and counters at each scrape."""

    def __init__(
        self,
        registry: Registry,
        supervisor: Supervisor,
        sampler: UsageSampler,
        messaging: Messaging,
        streams: Streams,
        meter: Meter,
    ) -> None:
        self._registry = registry
        self._supervisor = supervisor
        self._sampler = sampler
        self._messaging = messaging
        self._streams = streams
        self._counts = meter.counts

    def collect(self) -> Iterator[Metric]:
        yield from self._instances()
        yield from self._messages()
        yield from self._streams_metrics()
        yield from self._http()

    def _instances(self) -> Iterator[Metric]:
        instances = self._registry.all(include_archived=True)
        by_status = GaugeMetricFamily(
            "cpstream_instances", "Instances by status", labels=["status"]
        )
        counted = {status: 0 for status in (*INSTANCE_STATUSES, "archived")}
        for instance in instances:
            counted[instance.shown_status] += 1
        for status, count in counted.items():
            by_status.add_metric([status], count)
        yield by_status
        restarts = CounterMetricFamily(
            "cpstream_instance_restarts",
            "Starts of an instance after its first (automatic and by an operator), since created",
            labels=["instance"],
        )
        cpu = CounterMetricFamily(
            "cpstream_instance_cpu_seconds",
            "CPU time of the instance's process group seen by the sampler since this control"
            " plane started",
            labels=["instance"],
        )
        rss = GaugeMetricFamily(
            "cpstream_instance_rss_bytes",
            "Resident memory of the instance's process group, latest sample",
            labels=["instance"],
        )
        for instance in instances:
            if instance.archived:
                continue
            restarts.add_metric([instance.name], instance.restarts)
            if instance.id in self._sampler.cpu_seconds:
                cpu.add_metric([instance.name], self._sampler.cpu_seconds[instance.id])
            if instance.usage is not None:
                rss.add_metric([instance.name], instance.usage["rss"])
        yield restarts
        yield cpu
        yield rss
        yield CounterMetricFamily(
            "cpstream_crash_loops",
            "Times an instance entered crash_loop since this control plane started",
            value=self._supervisor.crash_loops,
        )
        yield CounterMetricFamily(
            "cpstream_usage_samples",
            "Resource sample ticks done since this control plane started",
            value=self._sampler.ticks,
        )

    def _messages(self) -> Iterator[Metric]:
        by_status = GaugeMetricFamily("cpstream_messages", "Messages by status", labels=["status"])
        for status, count in self._messaging.counts().items():
            by_status.add_metric([status], count)
        yield by_status
        yield CounterMetricFamily(
            "cpstream_messages_sent", "Messages sent (queued)", value=self._counts["messages_sent"]
        )
        for name, description, event in MESSAGE_COUNTERS:
            yield CounterMetricFamily(
                f"cpstream_messages_{name}",
                description,
                value=self._counts[("message_event", event)],
            )

    def _streams_metrics(self) -> Iterator[Metric]:
        open_now = self._streams.by_endpoint()
        connections = GaugeMetricFamily(
            "cpstream_stream_connections", "Open stream connections by kind", labels=["kind"]
        )
        frames = CounterMetricFamily(
            "cpstream_stream_frames", "WebSocket frames written, by kind", labels=["kind"]
        )
        sent = CounterMetricFamily(
            "cpstream_stream_bytes",
            "WebSocket bytes written (frame header and payload, before any compression)",
            labels=["kind"],
        )
        lagged = CounterMetricFamily(
            "cpstream_stream_lagged",
            "Times a subscriber fell 256 frames behind and its queue was dropped",
            labels=["kind"],
        )
        for kind in STREAM_KINDS:
            connections.add_metric([kind], open_now.get(kind, 0))
            frames.add_metric([kind], self._counts[("stream_frames", kind)])
            sent.add_metric([kind], self._counts[("stream_bytes", kind)])
            if kind != LOGS:
                lagged.add_metric([kind], self._counts[("stream_lagged", kind)])
        resyncs = CounterMetricFamily(
            "cpstream_stream_resyncs",
            "Resync snapshots sent instead of deltas, by kind and reason",
            labels=["kind", "reason"],
        )
        for key, count in list(self._counts.items()):
            if isinstance(key, tuple) and key[0] == "stream_resyncs":
                resyncs.add_metric([key[1], key[2]], count)
        yield from (connections, frames, sent, lagged, resyncs)
        yield CounterMetricFamily(
            "cpstream_log_tailed_bytes",
            "Log bytes read for log stream viewers",
            value=self._counts["log_bytes"],
        )

    def _http(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "cpstream_http_requests",
            "HTTP requests by route template (never a raw path) and status",
            labels=["route", "code"],
        )
        for key, count in list(self._counts.items()):
            if isinstance(key, tuple) and key[0] == "http":
                requests.add_metric([key[1], str(key[2])], count)
        yield requests


class Metrics:
    """One daemon's metrics registry: the collector above, the latency histograms fed by the
    meter's timings, and the process's own (CPU, memory, descriptors)."""

    def __init__(self, collector: ControlPlaneCollector, meter: Meter) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        ProcessCollector(registry=self.registry)
        self._histograms = {
            "send_to_lease": Histogram(
                "cpstream_message_send_to_lease_seconds",
                "From a message becoming available (its send, retry or replay) to its lease",
                buckets=QUEUED,
                registry=self.registry,
            ),
            "lease_to_ack": Histogram(
                "cpstream_message_lease_to_ack_seconds",
                "From a message's lease to its acknowledgement",
                buckets=QUEUED,
                registry=self.registry,
            ),
            "publish_write": Histogram(
                "cpstream_stream_publish_to_write_seconds",
                "From an event's publish to the end of the write round that sent it to every"
                " subscriber ready for it",
                buckets=QUICK,
                registry=self.registry,
            ),
        }
        meter.on_timing(self._observe)

    def _observe(self, name: str, seconds: float) -> None:
        histogram = self._histograms.get(name)
        if histogram is not None:
            histogram.observe(max(0.0, seconds))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsResource(Resource):
    """``GET /metrics`` (and HEAD): the text exposition. The site asks for the operator's
    credentials first, as for ``/api/`` (Prometheus: ``bearer_token_file``)."""

    isLeaf = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self._metrics = metrics

    def render(self, request: Any) -> bytes:
        if request.postpath and request.postpath != [b""]:
            return error_response(request, 404, "no such path")
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return error_response(request, 405, "method not allowed")
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return self._metrics.exposition()
