"""``GET /metrics`` in Prometheus text: request latency histograms of this API process,
its live stream, the webhook backlog, and every ingest process's counters (which each
ingest stores in ``ingest_stats`` with its stats line: the processes share only the
database)."""

from __future__ import annotations

import time
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


class ApiMetrics:
    """The API process's own metrics, in a registry of its own (no global state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "milepost_http_request_duration_seconds",
            "Time to the response's headers, by route template", ["method", "route", "status"],
            buckets=BUCKETS, registry=self.registry)  # fmt: skip
        self.requests = Counter("milepost_http_requests", "Requests answered",
                                ["method", "route", "status"], registry=self.registry)
        # each label set's children, looked up once: ``labels()`` costs more than ``observe``
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def observe(self, method: str, route: str, status: str, seconds: float) -> None:
        # any method a client sends would be a label set of its own: bounded here
        labels = (method if method in METHODS else "other", route, status)
        children = self._children.get(labels)
        if children is None:
            children = self._children[labels] = (self.latency.labels(*labels),
                                                  self.requests.labels(*labels))  # fmt: skip
        children[0].observe(seconds)
        children[1].inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)


class LatencyMiddleware:
    """Pure ASGI: measures until the response starts (so a stream counts its first byte)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = scope.get("route")
                template = getattr(route, "path", None) or "unmatched"
                self.metrics.observe(scope["method"], template, f"{message['status'] // 100}xx",
                                     time.perf_counter() - t0)  # fmt: skip
            await send(message)

        await self.app(scope, receive, timed_send)


def gauge_lines(name: str, help_: str, samples: list[tuple[dict[str, str], float]],
                kind: str = "gauge") -> str:  # fmt: skip
    out = [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
        out.append(f"{name}{{{text}}} {value}" if text else f"{name} {value}")
    return "\n".join(out) + "\n"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def ingest_lines(rows: list[tuple[str, Any, dict[str, float], float]]) -> str:
    """ingest_stats rows (instance, started_at, stats, age_s) as metric families."""
    names = sorted({k for _, _, stats, _ in rows for k in stats})
    parts = []
    for key in names:
        kind = "counter" if key.endswith("_total") else "gauge"
        parts.append(gauge_lines(f"milepost_ingest_{key}", f"milepost ingest: {key}",
                                 [({"instance": inst}, float(stats[key]))
                                  for inst, _, stats, _ in rows if key in stats], kind))
    parts.append(gauge_lines("milepost_ingest_stats_age_seconds",
                             "seconds since the ingest process last stored its counters",
                             [({"instance": inst}, round(age, 3)) for inst, _, _, age in rows]))
    return "".join(parts)
