"""The app's metrics: `instrument_app()` adds `/metrics`, the request id, and what the metrics read.

The realtime engine, the chat messages waiting to be stored and the database pool are read when Prometheus
scrapes, through collectors: nothing is counted twice and the hot paths pay nothing for it. They only exist
while the app's lifespan runs; before and after, their metrics are absent.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator

from fastapi import FastAPI
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from ..realtime import BrokerState, Stats, WebSocketManager
from .context import RequestIdMiddleware
from .metrics import MetricsMiddleware, TrafficMetrics, metrics_endpoint, new_registry


class RealtimeCollector(Collector):
    """The manager's connections, counters and broker state, read at each scrape.

    Labels are the consumer class, the envelope kind and the broker state: a few values each, whatever
    the traffic.
    """

    def __init__(self, manager: Callable[[], WebSocketManager | None]) -> None:
        self.manager = manager

    def collect(self) -> Iterator[Metric]:
        manager = self.manager()
        if manager is None:
            return
        yield from self._connections(manager)
        yield from self._counters(manager.stats)
        yield from self._broker(manager)

    @staticmethod
    def _connections(manager: WebSocketManager) -> Iterator[Metric]:
        connections = GaugeMetricFamily(
            "realtime_connections", "Connections held by the manager, by consumer class", labels=["consumer"]
        )
        for consumer, count in sorted(Counter(c.consumer_name or "none" for c in manager).items()):
            connections.add_metric([consumer], count)
        yield connections
        yield GaugeMetricFamily(
            "realtime_outbound_queue_depth_max",
            "Frames waiting now in the fullest outbound queue; near WS_OUTBOUND_QUEUE_SIZE, a client lags",
            value=max((connection.pending for connection in manager), default=0),
        )
        yield GaugeMetricFamily(
            "realtime_outbound_queue_high_water",
            "The most frames ever waiting at once in one connection's outbound queue since the start",
            value=manager.stats.queue_high_water,
        )

    @staticmethod
    def _counters(stats: Stats) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "realtime_broker_messages",
            "Messages taken off the broker, each fanned out to the local connections it is for",
            value=stats.broker_messages,
        )
        yield CounterMetricFamily(
            "realtime_broker_messages_malformed",
            "Broker messages dropped because they could not be decoded",
            value=stats.malformed_broker_messages,
        )
        yield CounterMetricFamily(
            "realtime_delivery_errors",
            "Broker messages decoded but not delivered because the engine failed",
            value=stats.delivery_errors,
        )
        fanout = HistogramMetricFamily(
            "realtime_fanout_recipients",
            "Local connections each broker message was queued for, by kind (broadcast, conn, group, topic)",
            labels=["kind"],
        )
        for kind, sizes in sorted(stats.fanout.items()):
            buckets = [
                ("+Inf" if math.isinf(bound) else str(float(bound)), count)
                for bound, count in sizes.cumulative()
            ]
            fanout.add_metric([kind], buckets, sum_value=sizes.total)
        yield fanout
        yield CounterMetricFamily(
            "realtime_frames_delivered",
            "Frames queued for local connections by the broker messages taken",
            value=stats.frames_delivered,
        )
        yield CounterMetricFamily(
            "realtime_frames_dropped",
            "Frames that never reached a socket: its connection was closing, too slow (1013) or gone",
            value=stats.frames_dropped,
        )
        yield CounterMetricFamily(
            "realtime_slow_consumer_closes",
            "Connections closed with 1013 because their outbound queue overflowed",
            value=stats.slow_consumers_closed,
        )
        yield CounterMetricFamily(
            "realtime_handler_errors",
            "Consumer handlers that raised an unexpected error",
            value=stats.handler_errors,
        )

    @staticmethod
    def _broker(manager: WebSocketManager) -> Iterator[Metric]:
        broker = manager.broker
        yield GaugeMetricFamily(
            "realtime_ready", "1 while the broker is connected and the listener runs", value=manager.ready
        )
        yield GaugeMetricFamily(
            "realtime_listening", "1 while the tasks reading the broker run", value=manager.listening
        )
        state = GaugeMetricFamily(
            "realtime_broker_state", "The broker connection's state: 1 for the current one", labels=["state"]
        )
        for candidate in BrokerState:
            state.add_metric([candidate.value], float(broker.state is candidate))
        yield state
        yield CounterMetricFamily(
            "realtime_broker_reconnects",
            "Times the broker connection was lost and restored, subscriptions included",
            value=broker.reconnects,
        )
        yield CounterMetricFamily(
            "realtime_recovery_heals",
            "Times a connection of a recoverable group was sent what it missed live, from the history",
            value=manager.recovery.healed,
        )
        yield CounterMetricFamily(
            "realtime_recovery_truncated",
            "Replays cut to the most recent window (the client got history.truncated)",
            value=manager.recovery.truncated,
        )


class DatabasePoolCollector(Collector):
    """The SQLAlchemy connection pool: its size, and connections in use and idle, read at each scrape."""

    def __init__(self, engine: Callable[[], AsyncEngine | None]) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        engine = self.engine()
        if engine is None or not isinstance(engine.pool, QueuePool):
            return
        pool = engine.pool
        yield GaugeMetricFamily("db_pool_size", "Connections the pool keeps open", value=pool.size())
        connections = GaugeMetricFamily(
            "db_pool_connections",
            "Open database connections, by whether a request holds them",
            labels=["state"],
        )
        connections.add_metric(["in_use"], pool.checkedout())
        connections.add_metric(["idle"], pool.checkedin())
        yield connections
        yield GaugeMetricFamily(
            "db_pool_overflow",
            "Connections open beyond the pool size (up to its max overflow)",
            value=max(pool.overflow(), 0),
        )


class MessagesWaitingCollector(Collector):
    """The chat messages posted and not yet stored (the app's `message_log`), read at each scrape."""

    def __init__(self, waiting: Callable[[], int | None]) -> None:
        self.waiting = waiting

    def collect(self) -> Iterator[Metric]:
        waiting = self.waiting()
        if waiting is not None:
            yield GaugeMetricFamily(
                "chat_messages_waiting",
                "Chat messages posted and not yet stored, in all rooms: the backlog of the store",
                value=waiting,
            )


def _messages_waiting(app: FastAPI) -> int | None:
    log = getattr(app.state, "message_log", None)
    return None if log is None else int(log.waiting)


def instrument_app(app: FastAPI) -> None:
    """Serve `/metrics` (out of the OpenAPI schema), give each request an id, and measure the traffic."""
    registry = new_registry()
    registry.register(RealtimeCollector(lambda: getattr(app.state, "manager", None)))
    registry.register(DatabasePoolCollector(lambda: getattr(app.state, "engine", None)))
    registry.register(MessagesWaitingCollector(lambda: _messages_waiting(app)))
    app.add_middleware(MetricsMiddleware, metrics=TrafficMetrics(registry))
    # Added last, so it runs first: every log line of the request, middleware included, has the id.
    app.add_middleware(RequestIdMiddleware)
    app.add_route("/metrics", metrics_endpoint(registry), include_in_schema=False)
    app.state.metrics_registry = registry
