"""/healthz, /readyz and /metrics, served by a real Service on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot.ops import config
from bot.ops.engine import Engine
from bot.ops.metrics import ANNOUNCEMENTS
from bot.service import Service
from tests.support.redis_server import RedisServer, redis_server  # noqa: F401


class StubFrontEnd:
    """A front end whose connection state the test sets."""

    name = "stub"

    async def idle(self) -> bool:
        return False

    def __init__(self) -> None:
        self.connected = False

    async def start(self) -> None: ...

    async def serve(self) -> None: ...

    async def stop(self) -> None: ...

    def ready(self) -> tuple[bool, str]:
        return self.connected, "connected" if self.connected else "not connected"


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    settings = config.load(
        data_dir=tmp_path / "data", http={"host": "127.0.0.1", "port": 0, "api_token": "t0ken-abc"}
    )
    running = Service(settings)
    await running.server.start()
    yield running
    await running.server.stop()
    await running.pipeline.aclose()


def url(service: Service, path: str) -> str:
    return f"http://127.0.0.1:{service.server.port}{path}"


async def test_healthz_answers_while_serving(service: Service) -> None:
    async with aiohttp.ClientSession() as http, http.get(url(service, "/healthz")) as response:
        assert response.status == 200
        assert await response.json() == {"status": "ok"}


async def test_readyz_follows_the_front_ends(service: Service) -> None:
    stub = StubFrontEnd()
    service.front_ends.append(stub)
    async with aiohttp.ClientSession() as http:
        async with http.get(url(service, "/readyz")) as response:
            body = await response.json()
            assert response.status == 503
            assert body["checks"]["stub"] == {"ok": False, "detail": "not connected"}
            assert body["checks"]["default_provider"]["ok"] is True
        stub.connected = True
        async with http.get(url(service, "/readyz")) as response:
            assert response.status == 200
            assert (await response.json())["status"] == "ready"


async def test_readyz_fails_when_the_default_provider_cannot_be_used(tmp_path: Path) -> None:
    settings = config.load(data_dir=tmp_path / "data", default_provider="segmind", http={"port": 0})
    service = Service(settings)
    await service.server.start()
    try:
        async with aiohttp.ClientSession() as http, http.get(url(service, "/readyz")) as response:
            body = await response.json()
        assert response.status == 503
        assert body["checks"]["default_provider"]["ok"] is False
        assert "API key" in body["checks"]["default_provider"]["detail"]
    finally:
        await service.server.stop()
        await service.pipeline.aclose()


async def test_metrics_export_oyez_counters_in_prometheus_format(service: Service) -> None:
    before = ANNOUNCEMENTS.labels(source="http", state="failed")._value.get()
    async with aiohttp.ClientSession() as http:
        async with http.post(
            url(service, "/api/v1/announce"),
            json={"media_player": "media_player.kitchen"},  # no message: invalid
            headers={"Authorization": "Bearer t0ken-abc"},
        ) as response:
            assert response.status == 422
        async with http.get(url(service, "/metrics")) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
    assert 'oyez_announcements_total{source="http",state="failed"}' in text
    line = next(
        x
        for x in text.splitlines()
        if x.startswith('oyez_announcements_total{source="http",state="failed"}')
    )
    assert float(line.split()[-1]) == before + 1
    for name in (
        "oyez_requests_total",
        "oyez_synthesis_seconds",
        "oyez_time_to_first_audio_seconds",
        "oyez_queue_depth",
        "oyez_homeassistant_reconnects_total",
        "oyez_rate_limited_total",
        "oyez_fallbacks_total",
        "oyez_spend_usd_total",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in text, name


async def test_readyz_says_when_the_shared_books_cannot_be_read(
    tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811 - for its binary: the test stops a server of its own
) -> None:
    own = RedisServer(redis_server.binary, tmp_path / "redis")
    (tmp_path / "redis").mkdir()
    own.start()
    settings = config.load(
        data_dir=tmp_path / "data",
        http={"host": "127.0.0.1", "port": 0},
        providers={"segmind": {"api_key": "test-segmind-key", "base_url": "http://127.0.0.1:9"}},
        engine={"url": own.url},
    )
    try:
        async with await Engine.open(settings.engine) as engine:
            running = Service(settings, engine=engine)
            await running.server.start()
            try:
                async with aiohttp.ClientSession() as http:
                    async with http.get(url(running, "/readyz")) as response:
                        assert response.status == 200
                    own.stop()  # the engine goes away
                    async with http.get(url(running, "/readyz")) as response:
                        assert response.status == 503
                        body = await response.json()
                assert "the books cannot be read" in body["checks"]["circuits"]["detail"]
            finally:
                await running.server.stop()
                await running.pipeline.aclose()
    finally:
        own.stop()
