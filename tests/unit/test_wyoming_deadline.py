"""The Wyoming adapter's requests carry a deadline, so an overloaded engine refuses them in time (an error event)
instead of queueing them past what a Home Assistant client waits."""

from __future__ import annotations

import asyncio

from services.core.contracts.specs import WyomingSettings
from services.wyoming.router_api import RouterApi


def test_every_request_to_the_router_says_how_long_the_adapter_waits():
    api = RouterApi.connect("http://127.0.0.1:9", "k", WyomingSettings().request_timeout_s)
    assert api.client.headers["X-Harmony-Timeout"] == "60"
    assert api.client.headers["Authorization"] == "Bearer k"
    assert "X-Harmony-Timeout" not in RouterApi.connect("http://127.0.0.1:9").client.headers
    asyncio.run(api.client.aclose())
