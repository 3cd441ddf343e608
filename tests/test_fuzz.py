"""Property-based fuzzing of every edge that takes data from outside (hypothesis): whatever
arrives, the answer is a clear 4xx (or success), never a 5xx, never an uncaught exception.

The HTTP API (``POST /api/v1/announce``, ``/api/v1/schedules``) runs once, on 127.0.0.1, in a
service on its own thread and event loop; each example is one request to it. The announcement
core (what Home Assistant's ``oyez_announce`` data reaches) and the configuration are fuzzed
in-process. Examples are JSON-like values biased toward the fields each edge knows.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.announce.announcer import Announcer
from bot.announce.model import AnnouncementState
from bot.errors import ConfigError
from bot.ops import config
from bot.service import Service
from bot.speech import RequestSource
from tests.support.sinks import RecordingSink

TOKEN = "fuzz-token-0123456789"
ANNOUNCEMENT_FIELDS = [
    "message", "media_player", "discord", "voice", "provider", "model", "options", "chime",
    "volume", "priority", "ttl_s", "id", "title", "language", "cache", "fallback",
]  # fmt: skip
SCHEDULE_FIELDS = [
    "name", "cron", "at", "time_zone", "message", "media_player", "discord", "voice",
    "provider", "priority", "catch_up", "enabled", "options",
]  # fmt: skip
SETTINGS_FIELDS = [
    "time_zone", "default_provider", "default_voice", "fallback", "patience_s", "log_format",
    "max_text_length", "cache", "http", "announce", "budgets", "credits", "voices", "providers",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["media_player.kitchen", "1/2", "0 19 * * 2", "Europe/Paris", "piper", ""]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


def objects(fields: list[str]) -> st.SearchStrategy[Any]:
    """Mappings of the edge's own field names (and a stray one) to any JSON value, or any
    JSON value at all."""
    keys = st.sampled_from(fields) | st.text(max_size=10)
    return st.dictionaries(keys, json_values, max_size=6) | json_values


FUZZ = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The service (HTTP API on, a recording sink) on its own thread; its base URL."""
    data_dir = tmp_path_factory.mktemp("fuzz") / "data"
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> tuple[Service, asyncio.Task[None]]:
        settings = config.load(
            data_dir=data_dir,
            http={"host": "127.0.0.1", "port": 0, "api_token": TOKEN},
            announce={"media_players": ["media_player.kitchen"]},
        )
        service = Service(settings)
        await service.build()
        service.announcer.add_sink(RecordingSink())
        serving = asyncio.create_task(service.serve())
        for _ in range(1000):  # until the server listens
            if service.server.port:
                break
            await asyncio.sleep(0.01)
        return service, serving

    service, serving = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    try:
        yield f"http://127.0.0.1:{service.server.port}/api/v1"
    finally:
        loop.call_soon_threadsafe(serving.cancel)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def send(method: str, url: str, body: bytes) -> tuple[int, str, bytes]:
    """(status, content type, body) of one request with the API token."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    request = urllib.request.Request(url, data=body, method=method, headers=headers)  # noqa: S310 - 127.0.0.1
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310 - 127.0.0.1
            return reply.status, reply.headers.get_content_type(), reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get_content_type(), error.read()


def assert_answered(status: int, content_type: str, body: bytes) -> None:
    assert status < 500, body
    assert content_type == "application/json"
    if status >= 400:
        assert json.loads(body)["error"]


def encoded(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


@FUZZ
@given(data=objects(ANNOUNCEMENT_FIELDS))
def test_announce_never_answers_5xx(api: str, data: Any) -> None:
    assert_answered(*send("POST", f"{api}/announce", encoded(data)))


@FUZZ
@given(data=objects(SCHEDULE_FIELDS), name=st.text(max_size=20))
def test_schedules_never_answer_5xx(api: str, data: Any, name: str) -> None:
    assert_answered(*send("POST", f"{api}/schedules", encoded(data)))
    target = urllib.parse.quote(name, safe="") or "x"
    assert_answered(*send("PATCH", f"{api}/schedules/{target}", encoded(data)))


@FUZZ
@given(body=st.binary(max_size=200))
def test_any_bytes_never_answer_5xx(api: str, body: bytes) -> None:
    assert_answered(*send("POST", f"{api}/announce", body))


@FUZZ
@given(data=objects(ANNOUNCEMENT_FIELDS))
def test_event_data_ends_in_a_status(tmp_path: Path, data: Any) -> None:
    """What a Home Assistant ``oyez_announce`` event carries: a status, never an exception."""

    async def submit() -> AnnouncementState:
        announcer = Announcer(config.load(data_dir=tmp_path / "data"))
        announcer.add_sink(RecordingSink())
        try:
            status = await announcer.submit(data, RequestSource.HOMEASSISTANT, requester="ha")
            return status.state
        finally:
            await announcer.aclose()

    assert isinstance(asyncio.run(submit()), AnnouncementState)


@FUZZ
@given(data=st.dictionaries(st.sampled_from(SETTINGS_FIELDS), json_values, max_size=4))
def test_configuration_is_loaded_or_refused_with_a_reason(tmp_path: Path, data: Any) -> None:
    problem: str | None = None
    try:
        config.load(data_dir=tmp_path / "data", **data)
    except ConfigError as exc:
        problem = str(exc)
    assert problem is None or problem.strip()
