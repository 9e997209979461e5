"""Prometheus metrics, JSON logs and the HTTP instrumentation every service shares.

Metrics are module-level singletons labelled by `service`, so several services can run in
one process (the tests do) without registering a metric twice. Labels are bounded: route
templates, never raw paths; topics and event types, never ids.
"""

from __future__ import annotations

import logging
import sys
import time

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from pythonjsonlogger.json import JsonFormatter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_REQUESTS = Counter(
    "hotline_http_requests_total",
    "HTTP requests answered, by route template and status code.",
    ["service", "method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "hotline_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template.",
    ["service", "method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
EVENTS_PUBLISHED = Counter(
    "hotline_events_published_total",
    "Events the outbox relay published to Kafka.",
    ["service", "topic", "type"],
)
EVENTS_CONSUMED = Counter(
    "hotline_events_consumed_total",
    "Events a consumer took from Kafka, by outcome (processed, duplicate, skipped).",
    ["service", "topic", "type", "outcome"],
)
EVENTS_DEAD_LETTERED = Counter(
    "hotline_events_dead_lettered_total",
    "Records sent to a dead-letter topic because they can never be processed.",
    ["service", "topic"],
)
DEAD_LETTERS_CUT = Counter(
    "hotline_dead_letters_cut_total",
    "Dead letters written as less than the whole record, by kind: truncated (too large to "
    "copy whole) or minimal (the copy was refused; only the reason and coordinates kept).",
    ["service", "topic", "kind"],
)
OUTBOX_BACKLOG = Gauge(
    "hotline_outbox_backlog",
    "Events written to the outbox and waiting to be published (not those set aside or held "
    "behind one), measured every second.",
    ["service"],
)
OUTBOX_OLDEST_SECONDS = Gauge(
    "hotline_outbox_oldest_unpublished_age_seconds",
    "Age of the oldest outbox event waiting to be published (0 when none waits).",
    ["service"],
)
# Not `hotline_outbox_set_aside`: that is the counter's family name (`..._total`).
OUTBOX_SET_ASIDE = Gauge(
    "hotline_outbox_set_aside_events",
    "Outbox events set aside now because they can never be published as they are "
    "(`hotline outbox list` shows them).",
    ["service"],
)
OUTBOX_HELD = Gauge(
    "hotline_outbox_held_events",
    "Outbox events waiting behind an earlier event of their ticket that was set aside.",
    ["service"],
)
OUTBOX_SET_ASIDE_TOTAL = Counter(
    "hotline_outbox_set_aside_total",
    "Outbox events the relay set aside because they can never be published as they are.",
    ["service"],
)
CONSUMER_LAG = Gauge(
    "hotline_consumer_lag",
    "Records on the topic the consumer group has not yet processed, per partition.",
    ["service", "topic", "partition"],
)
TRANSIENT_ERRORS = Counter(
    "hotline_transient_errors_total",
    "Failures that were retried with backoff (database or broker unreachable).",
    ["service", "component"],
)
PERMANENT_ERRORS = Counter(
    "hotline_permanent_errors_total",
    "Background steps that failed for a reason other than an unreachable database or broker "
    "(the loop is retried slowly and /readyz reports it).",
    ["service", "component"],
)
SUPERVISOR_RESTARTS = Gauge(
    "hotline_supervisor_restarts",
    "How many times the supervisor (`hotline up`) has restarted this service after it exited "
    "on its own (set at start from HOTLINE_RESTARTS).",
    ["service"],
)

_ACCESS_LOG = logging.getLogger("hotline.http")


def configure_logging(level: str = "INFO", json_logs: bool = True) -> None:
    """One JSON object per line on stderr; uvicorn's own loggers go the same way."""
    handler = logging.StreamHandler(sys.stderr)
    if json_logs:
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Our middleware logs requests with their route template; uvicorn's would repeat them.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


def route_template(scope: Scope) -> str:
    """The matched route's path template (`/tickets/{ticket_id}`), bounded for labels."""
    route = scope.get("route")
    return str(getattr(route, "path", "unmatched"))


class MeasureRequests:
    """ASGI middleware: count and time every request by route template, and log it (not
    `/metrics` and the probes). Plain ASGI: `@app.middleware("http")` (Starlette's
    BaseHTTPMiddleware) runs each request in a task of its own and streams the body through
    memory channels, which cost intake about a tenth of its time under load."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app, noting the status it answers with (500 if it raised)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def noted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noted)
        finally:
            elapsed = time.perf_counter() - started
            route = route_template(scope)
            method = scope["method"]
            HTTP_REQUESTS.labels(self.service, method, route, str(status)).inc()
            HTTP_LATENCY.labels(self.service, method, route).observe(elapsed)
            if route not in {"/metrics", "/healthz", "/readyz"}:
                _ACCESS_LOG.info(
                    "request",
                    extra={
                        "service": self.service,
                        "method": method,
                        "route": route,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                    },
                )


def instrument(app: FastAPI, service: str) -> None:
    """Count and time every request and serve `/metrics` in the Prometheus text format."""
    disable_created_metrics()  # type: ignore[no-untyped-call]  # `_created` series add nothing here
    app.add_middleware(MeasureRequests, service=service)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
