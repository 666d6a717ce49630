"""The gateway's own metric: which upstreams are in rotation, read from the pool at each scrape."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .upstreams import UpstreamPool


class UpstreamCollector(Collector):
    """`gateway_upstream_up{upstream="app1:8000"}`: 1 while the upstream is healthy, 0 otherwise.

    Labelled by host and port, which the configuration fixes: a handful of values at most.
    """

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "gateway_upstream_up", "1 while the upstream answers its health check", labels=["upstream"]
        )
        for upstream in self.pool.upstreams:
            up.add_metric([urlsplit(upstream.url).netloc], float(bool(upstream.healthy)))
        yield up
