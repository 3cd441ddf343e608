"""``oyez run --role``: each role runs only its parts, a process running some of them needs
the shared engine, and the roles come from the command line, ``run.roles`` or
``OYEZ_RUN__ROLES``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot import cli
from bot.errors import ConfigError
from bot.ops import config
from bot.ops.config import ROLES, EngineSettings
from bot.ops.engine import Engine
from bot.service import Service
from tests.support.redis_server import RedisServer, redis_server, redis_url  # noqa: F401

TOKEN = "api-token-for-tests-0123"
DISCORD = {"token": "MTAwMA.secret-bot-token"}
HOME = {"url": "http://127.0.0.1:9", "token": "home-assistant-token"}


def test_roles_come_from_the_environment_comma_separated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert config.load().run.roles == list(ROLES)
    monkeypatch.setenv("OYEZ_RUN__ROLES", " gateway, API,gateway")
    assert config.load().run.roles == ["gateway", "api"]
    monkeypatch.setenv("OYEZ_RUN__ROLES", "all")
    assert config.load().run.roles == list(ROLES)


def test_roles_come_from_the_configuration_file(tmp_path: Path) -> None:
    path = tmp_path / "oyez.yaml"
    path.write_text("run:\n  roles: [coordinator, api]\n")
    assert config.load(path).run.roles == ["coordinator", "api"]


@pytest.mark.parametrize(
    ("roles", "reason"),
    [("gatway", "unknown role 'gatway': choose from gateway"), (" , ", "no role given")],
)
def test_a_wrong_role_is_named(monkeypatch: pytest.MonkeyPatch, roles: str, reason: str) -> None:
    monkeypatch.setenv("OYEZ_RUN__ROLES", roles)
    with pytest.raises(ConfigError, match=reason):
        config.load()


def test_the_command_line_overrides_the_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OYEZ_RUN__ROLES", "api")
    settings = config.load()
    chosen = cli._with_roles(settings, ["gateway", "coordinator,gateway"])
    assert chosen.run.roles == ["gateway", "coordinator"]
    assert cli._with_roles(settings, None).run.roles == ["api"]
    with pytest.raises(ConfigError, match="--role: unknown role 'synthesis'"):
        cli._with_roles(settings, ["synthesis"])


def test_some_roles_without_the_engine_are_refused_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OYEZ_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("OYEZ_HTTP__API_TOKEN", TOKEN)
    assert cli.main(["run", "--role", "api"]) == cli.EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert "roles api runs only part of Oyez" in error
    assert "OYEZ_ENGINE__URL" in error


def test_synthesis_in_workers_without_the_engine_is_refused_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OYEZ_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("OYEZ_HTTP__API_TOKEN", TOKEN)
    monkeypatch.setenv("OYEZ_SYNTH__MODE", "workers")
    assert cli.main(["run"]) == cli.EXIT_BAD_INPUT
    error = capsys.readouterr().err
    assert "synth.mode workers sends synthesis to the synth processes" in error
    assert "OYEZ_ENGINE__URL" in error


async def test_where_each_role_synthesizes(
    tmp_path: Path,
    redis_url: str,  # noqa: F811 - the fixture imported above
) -> None:
    """auto: a process with the synth role synthesizes itself; one without sends its misses to
    the workers (when one is alive); local never; workers always, its own worker included."""
    cases = [
        (["synth"], "auto", False),
        (["gateway"], "auto", True),
        (["gateway"], "local", False),
        (["synth", "gateway"], "workers", True),
    ]
    for roles, mode, remote in cases:
        sections: dict[str, Any] = {"discord": DISCORD, "synth": {"mode": mode}}
        service = await _built(tmp_path, redis_url, roles, **sections)
        try:
            assert (service.pipeline.remote is not None) is remote, (roles, mode)
            assert (service.workers is not None) is ("synth" in roles)
        finally:
            await _dispose(service)


async def _built(tmp_path: Path, url: str, roles: list[str], **sections: Any) -> Service:
    settings = config.load(data_dir=tmp_path, engine={"url": url}, run={"roles": roles}, **sections)
    engine = await Engine.open(EngineSettings(url=url))
    service = Service(settings, engine=engine)
    try:
        await service.build()
    except ConfigError:
        await service.pipeline.aclose()
        await engine.aclose()
        raise
    return service


async def _dispose(service: Service) -> None:
    for front_end in reversed(service.front_ends):
        await front_end.stop()
    await service.pipeline.aclose()
    assert service.engine is not None
    await service.engine.aclose()


@pytest.mark.parametrize(
    ("roles", "sections", "front_ends"),
    [
        (["gateway"], {"discord": DISCORD}, ["discord"]),
        (["coordinator"], {"discord": DISCORD}, ["scheduler"]),
        (["api"], {"discord": DISCORD, "http": {"api_token": TOKEN}}, []),
        (["api"], {"homeassistant": HOME, "http": {"api_token": TOKEN}}, ["homeassistant"]),
        (["coordinator"], {"homeassistant": HOME}, ["homeassistant", "scheduler"]),
        (["gateway", "coordinator"], {"discord": DISCORD}, ["discord", "scheduler"]),
        (list(ROLES), {"discord": DISCORD}, ["synth", "discord", "scheduler"]),
        (["synth"], {}, ["synth"]),
        (["gateway", "synth"], {"discord": DISCORD}, ["synth", "discord"]),
    ],
)
async def test_each_role_builds_only_its_front_ends(
    tmp_path: Path,
    redis_url: str,  # noqa: F811 - the fixture imported above
    roles: list[str],
    sections: dict[str, Any],
    front_ends: list[str],
) -> None:
    service = await _built(tmp_path, redis_url, roles, **sections)
    try:
        assert [f.name for f in service.front_ends] == front_ends
    finally:
        await _dispose(service)


@pytest.mark.parametrize(
    ("roles", "sections", "reason"),
    [
        (["gateway"], {}, "the gateway role runs the Discord bot: set OYEZ_DISCORD__TOKEN"),
        (["api"], {"discord": DISCORD}, "the api role serves the HTTP API or the Wyoming"),
    ],
)
async def test_a_role_with_nothing_to_run_is_refused(
    tmp_path: Path,
    redis_url: str,  # noqa: F811 - the fixture imported above
    roles: list[str],
    sections: dict[str, Any],
    reason: str,
) -> None:
    with pytest.raises(ConfigError, match=reason):
        await _built(tmp_path, redis_url, roles, **sections)


@pytest.fixture
async def serving(
    tmp_path: Path,
    redis_url: str,  # noqa: F811 - the fixture imported above
    request: pytest.FixtureRequest,
) -> AsyncIterator[Service]:
    http = {"host": "127.0.0.1", "port": 0, "api_token": TOKEN}
    service = await _built(tmp_path, redis_url, request.param, http=http)
    task = asyncio.create_task(service.serve())
    while service.server.port is None:  # noqa: ASYNC110 - started by serve()
        await asyncio.sleep(0.01)
    yield service
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert service.engine is not None
    await service.engine.aclose()


async def _statuses(service: Service) -> dict[str, int]:
    base = f"http://127.0.0.1:{service.server.port}"
    paths = ["/healthz", "/metrics", "/api/v1/requests/nobody", "/media/none.mp3"]
    paths.append("/api/v1/schedules")
    headers = {"Authorization": f"Bearer {TOKEN}"}
    statuses = {}
    async with aiohttp.ClientSession(headers=headers) as session:
        for path in paths:
            async with session.get(base + path) as reply:
                statuses[path] = reply.status
    return statuses


@pytest.mark.parametrize("serving", [["api"]], indirect=True)
async def test_the_api_role_serves_the_api_and_media_not_the_schedules(
    serving: Service,
) -> None:
    assert await _statuses(serving) == {
        "/healthz": 200,
        "/metrics": 200,
        "/api/v1/requests/nobody": 404,  # the API's own 404: no such request
        "/media/none.mp3": 404,
        "/api/v1/schedules": 404,
    }
    assert "/api/v1/requests/{id}" in _routes(serving)
    assert "/media/{name}" in _routes(serving)
    assert not any(r.startswith("/api/v1/schedules") for r in _routes(serving))


@pytest.mark.parametrize("serving", [["coordinator"]], indirect=True)
async def test_the_coordinator_serves_health_and_schedules_only(serving: Service) -> None:
    statuses = await _statuses(serving)
    assert (statuses["/healthz"], statuses["/metrics"], statuses["/api/v1/schedules"]) == (
        200,
        200,
        200,
    )
    routes = _routes(serving)
    assert "/api/v1/requests/{id}" not in routes
    assert "/api/v1/announce" not in routes
    assert "/media/{name}" not in routes


def _routes(service: Service) -> set[str]:
    return {str(r.resource.canonical) for r in service.server.app.router.routes() if r.resource}
