"""`python -m services.<name>`: what the process entry point does before it serves."""

from __future__ import annotations

import gc
from types import SimpleNamespace

import uvicorn

import shared.serve
from shared.serve import serve


def test_what_was_built_before_serving_is_frozen_out_of_the_collectors_sight(monkeypatch):
    """A full collection scanned the 128,000 objects of a started service for 65-85 ms, a
    pause every request in flight shared (the tail of `/rates` under load)."""
    seen: dict[str, int] = {}

    async def fake_serve(self: uvicorn.Server, sockets: object = None) -> None:
        seen["frozen"] = gc.get_freeze_count()

    monkeypatch.setattr(uvicorn.Server, "serve", fake_serve)
    monkeypatch.setattr(shared.serve, "configure_logging", lambda *args: None)
    runtime = SimpleNamespace(spec=SimpleNamespace(name="metrics"))
    app = SimpleNamespace(state=SimpleNamespace(runtime=runtime))
    gc.unfreeze()
    try:
        serve(lambda settings: app, ["serve"])  # type: ignore[arg-type, return-value]
    finally:
        gc.unfreeze()
    assert seen["frozen"] > 1000
