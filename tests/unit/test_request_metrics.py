"""Every request is counted and timed by its route template and status, and logged, by the
plain-ASGI `MeasureRequests` middleware (it replaced a BaseHTTPMiddleware that cost intake
about a tenth of its time under load)."""

from __future__ import annotations

import logging
import uuid

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from prometheus_client import REGISTRY

from shared.observability import instrument


def app_of(service: str) -> FastAPI:
    app = FastAPI()
    instrument(app, service)

    @app.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        if item_id == "missing":
            raise HTTPException(status_code=404)
        return {"item_id": item_id}

    @app.post("/boom")
    async def boom() -> None:
        raise RuntimeError("unexpected")

    return app


def count(service: str, method: str, route: str, status: str) -> float:
    labels = {"service": service, "method": method, "route": route, "status": status}
    return REGISTRY.get_sample_value("hotline_http_requests_total", labels) or 0.0


def timed(service: str, method: str, route: str) -> float:
    labels = {"service": service, "method": method, "route": route}
    return REGISTRY.get_sample_value("hotline_http_request_duration_seconds_count", labels) or 0


async def test_requests_are_counted_timed_and_logged_by_route_template_and_status(
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = f"unit-{uuid.uuid4().hex[:8]}"
    transport = httpx.ASGITransport(app=app_of(service), raise_app_exceptions=False)
    with caplog.at_level(logging.INFO, logger="hotline.http"):
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/items/a")).status_code == 200
            assert (await client.get("/items/b")).status_code == 200
            assert (await client.get("/items/missing")).status_code == 404
            assert (await client.post("/boom")).status_code == 500
            assert (await client.get("/nowhere")).status_code == 404
            assert (await client.get("/metrics")).status_code == 200

    assert count(service, "GET", "/items/{item_id}", "200") == 2
    assert count(service, "GET", "/items/{item_id}", "404") == 1
    assert count(service, "POST", "/boom", "500") == 1
    assert count(service, "GET", "unmatched", "404") == 1
    assert timed(service, "GET", "/items/{item_id}") == 3
    logged = [r for r in caplog.records if getattr(r, "service", None) == service]
    assert [(r.route, r.status) for r in logged] == [  # type: ignore[attr-defined]
        ("/items/{item_id}", 200),
        ("/items/{item_id}", 200),
        ("/items/{item_id}", 404),
        ("/boom", 500),
        ("unmatched", 404),
    ]  # /metrics is counted, not logged
    assert count(service, "GET", "/metrics", "200") == 1
    assert all(r.duration_ms >= 0 for r in logged)  # type: ignore[attr-defined]
