"""Waiting on conditions (never a bare sleep) and small helpers the test levels share."""

from __future__ import annotations

import asyncio
import inspect
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from shared.serve import load_app
from shared.settings import ServiceName, Settings

T = TypeVar("T")


async def eventually(
    check: Callable[[], Any | Awaitable[Any]],
    *,
    timeout: float = 15.0,
    interval: float = 0.02,
    message: str = "condition",
) -> Any:
    """Poll `check` until it returns something truthy; fail with `message` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}; last={last!r}")
        await asyncio.sleep(interval)


def settings_for(infra: Any, database_url: str, **overrides: object) -> Settings:
    """Settings of a test stack: its own topics and data folder, quick loops."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    values: dict[str, object] = {
        "kafka_bootstrap_servers": infra.bootstrap_servers,
        "database_url": database_url,
        "topic_prefix": prefix,
        "data_dir": Path(tempfile.mkdtemp(prefix="hotline-data-")),
        "relay_idle_seconds": 0.05,
        "relay_max_backoff_seconds": 0.5,
        "consumer_poll_ms": 100,
        "consumer_max_backoff_seconds": 0.5,
        "consumer_session_timeout_ms": 6000,
        "shutdown_drain_seconds": 5.0,
        "log_json": False,
    }
    values.update(overrides)
    return Settings.model_validate(values)


@asynccontextmanager
async def running_service(
    name: ServiceName, settings: Settings, *, wait_for_broker: bool = True
) -> AsyncIterator[ServiceClient]:
    """A service app with its lifespan running (migrations, relay, consumer), and an HTTP
    client speaking to it in-process."""
    app = load_app(name, settings)
    async with app.router.lifespan_context(app):
        runtime = app.state.runtime
        if wait_for_broker:
            await eventually(runtime.broker_connected.is_set, message=f"{name} on the broker")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{name}") as client:
            yield ServiceClient(client, runtime)


@dataclass
class ServiceClient:
    """An HTTP client of one running service, plus its runtime for white-box waits."""

    http: httpx.AsyncClient
    runtime: Any

    async def consumed(self) -> None:
        """Wait until this service's consumer has caught up with everything on its topics."""
        await eventually(self._caught_up, message="consumer caught up")

    async def _caught_up(self) -> bool:
        loop = self.runtime.loop
        if loop is None:
            return False
        lags = await loop.source.lag()
        return bool(lags) and sum(lags.values()) == 0


async def read_topic(
    bootstrap_servers: str, topic: str, *, at_least: int = 0, timeout: float = 15.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record on `topic` from the beginning; waits until there are `at_least`."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers, enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    try:
        partitions = await eventually(
            lambda: consumer.partitions_for_topic(topic), message=f"topic {topic}"
        )
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        records: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + timeout
        while True:
            batch = await consumer.getmany(*assigned, timeout_ms=200)
            for part in batch.values():
                records.extend(part)
            if not batch and len(records) >= at_least:
                return records
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{topic}: {len(records)} records after {timeout}s, wanted {at_least}"
                )
    finally:
        await consumer.stop()


def headers_of(record: ConsumerRecord[bytes, bytes]) -> dict[str, bytes]:
    """A record's headers as a dict."""
    return dict(record.headers)
