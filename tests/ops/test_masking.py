"""A provider error that quotes the key (OpenAI's quotes part of it) is masked in every text that
leaves the process: the request status JSON and API bodies, the Home Assistant event data, the
Discord replies and the CLI's output; a piece of 8 or more characters from a secret's start too."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import pytest

from bot.announce.announcer import Announcer
from bot.announce.model import AnnouncementState
from bot.errors import ProviderAuthError
from bot.ops import config
from bot.ops.logs import MASK, mask_secrets, register_secret
from bot.providers.base import SynthesisJob
from bot.service import Service
from bot.speech import FallbackNote, RequestSource
from bot.web.server import OyezServer, json_error
from integrations.discord.commands import errors as discord_errors
from integrations.discord.commands import say as discord_say
from integrations.segmind import SegmindProvider
from tests.fakes.segmind import DEFAULT_API_KEY as SEGMIND_KEY
from tests.fakes.segmind import FakeSegmind
from tests.support.clock import NOON, FakeClock
from tests.support.secrets import register as watch
from tests.support.sinks import RecordingSink, utterance
from tests.test_cli_providers import oyez

#: Not one of the suite's watched secrets: the raw log records may carry it (they are masked
#: when formatted), which the session's secret scan would report for a watched one.
KEY = "sk-proj-Zq4v8Xc2Lm9Rt6Yp1Wb3Nd7Hs5Kf0Gj"
#: OpenAI's 401 message quotes the start and the end of the key.
QUOTED = f"Incorrect API key provided: {KEY[:14]}*************{KEY[-4:]}."
PLAYER = "media_player.kitchen"
TOKEN = "api-token-for-tests-0123"


def leaks(text: str, secret: str = KEY) -> list[str]:
    """The pieces of ``secret`` (8 or more characters from its start) found in ``text``."""
    return [secret[:n] for n in range(8, len(secret) + 1) if secret[:n] in text]


def test_whole_secrets_and_their_prefixes_are_masked() -> None:
    register_secret(KEY)
    assert mask_secrets(f"key={KEY}") == f"key={MASK}"
    masked = mask_secrets(QUOTED)
    assert leaks(masked) == []
    assert masked == f"Incorrect API key provided: {MASK}*************{KEY[-4:]}."
    assert mask_secrets(f"{KEY[:8]} and {KEY[:7]}x") == f"{MASK} and {KEY[:7]}x"
    assert mask_secrets("nothing secret here") == "nothing secret here"


async def test_the_status_json_and_the_api_answers_are_masked(tmp_path: Path) -> None:
    register_secret(KEY)
    settings = config.load(
        data_dir=tmp_path / "data", http={"host": "127.0.0.1", "port": 0, "api_token": TOKEN}
    )
    announcer = Announcer(settings, clock=FakeClock(NOON))
    sink = RecordingSink()
    sink.fail[PLAYER] = f"openai: HTTP 401: {QUOTED}"
    announcer.add_sink(sink)
    server = OyezServer(settings.http, settings.data_dir, announcer)
    await server.start()
    try:
        data = {"message": "x", "media_player": PLAYER, "id": "leaky"}
        status = await announcer.announce(data, RequestSource.HOMEASSISTANT)
        assert status.state is AnnouncementState.FAILED
        event = status.as_json()  # what oyez_announce_failed carries
        assert leaks(str(event)) == []
        assert MASK in event["reason"]
        assert MASK in event["targets"][0]["error"]
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"http://127.0.0.1:{server.port}/api/v1/requests/leaky",
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as reply,
        ):
            assert reply.status == 200
            body = await reply.text()
        assert leaks(body) == []
        assert MASK in body
    finally:
        await server.stop()
        await announcer.aclose()
    assert leaks(json_error(422, QUOTED).text or "") == []


class Interaction:
    """Just enough of a ``discord.Interaction`` to see what it was told."""

    def __init__(self, answered: bool) -> None:
        self.said: list[str] = []
        self.response = SimpleNamespace(is_done=lambda: answered, send_message=self._send_message)

    async def _send_message(self, message: str, **_: Any) -> None:
        self.said.append(message)

    async def edit_original_response(self, *, content: str) -> None:
        self.said.append(content)


async def test_discord_replies_are_masked() -> None:
    register_secret(KEY)
    for answered in (False, True):
        interaction = Interaction(answered)
        await discord_errors.answer(cast(Any, interaction), f"⚠️ {QUOTED}")
        assert leaks(interaction.said[0]) == [], interaction.said
    spoken = replace(
        utterance(cast(Any, SimpleNamespace(id="r", text="hi", output=None))),
        fallbacks=(FallbackNote("openai", QUOTED),),
    )
    reply = discord_say._reply(spoken)
    assert leaks(reply) == []
    assert MASK in reply


async def test_cli_fallback_line_masks_the_quoted_key(tmp_path: Path) -> None:
    async with FakeSegmind() as fake:
        quoted = f"Unauthorized: invalid API key {SEGMIND_KEY[:12]}... (full: {SEGMIND_KEY})"
        fake.inject_error("/v1/chatterbox-tts", 401, quoted)
        code, out, err = await oyez(
            "-v",
            "say",
            "Hello there.",
            "--provider",
            "segmind",
            "-o",
            "out.wav",
            cwd=tmp_path,
            env={
                "SEGMIND_API_KEY": SEGMIND_KEY,
                "OYEZ_PROVIDERS__SEGMIND__BASE_URL": fake.base_url,
            },
        )
    assert code == 0, err
    assert "instead   of segmind, which did not speak" in out
    assert MASK in out
    assert leaks(out + err, SEGMIND_KEY) == []


class QuotingFrontEnd:
    """A front end whose state quotes the key, as a provider's error might."""

    name = "quoting"

    async def idle(self) -> bool:
        return False

    async def start(self) -> None: ...

    async def serve(self) -> None: ...

    async def stop(self) -> None: ...

    def ready(self) -> tuple[bool, str]:
        return False, f"cannot connect: {QUOTED}"


async def test_the_unauthenticated_readiness_report_is_masked(tmp_path: Path) -> None:
    register_secret(KEY)
    service = Service(config.load(data_dir=tmp_path / "data", http={"port": 0}))
    service.front_ends.append(QuotingFrontEnd())
    await service.server.start()
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{service.server.port}/readyz") as response,
        ):
            assert response.status == 503
            body = await response.json()
    finally:
        await service.server.stop()
        await service.pipeline.aclose()
    assert leaks(str(body)) == []
    assert MASK in body["checks"]["quoting"]["detail"]


async def test_a_provider_error_quoting_the_key_is_masked_where_it_is_made() -> None:
    """So no log record carries it raw either (the session's secret scan watches this key)."""
    key = "sgm-live-7f3Qk2Vx9Lp4Zr8Tn1Wc6Yb5"
    register_secret(key)
    watch(key)
    async with FakeSegmind(api_key=key) as fake:
        fake.inject_error("/v1/orpheus-3b-0.1", 401, f"Unauthorized: invalid API key {key[:10]}…")
        provider = SegmindProvider.from_settings(
            config.load(providers={"segmind": {"api_key": key, "base_url": fake.base_url}})
        )
        try:
            resolved = await provider.resolve_voice("tara", None)
            with pytest.raises(ProviderAuthError) as caught:
                await provider.synthesize(SynthesisJob("r", "Hello.", resolved, {}))
        finally:
            await provider.aclose()
    assert leaks(str(caught.value), key) == []
    assert MASK in str(caught.value)
