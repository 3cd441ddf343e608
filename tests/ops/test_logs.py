"""Log lines: the request id on each, JSON on demand, secrets masked everywhere."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from bot.ops import config
from bot.ops.logs import (
    MASK,
    bind_request,
    mask_secrets,
    register_secret,
    register_settings_secrets,
    setup_logging,
)

log = logging.getLogger("oyez.test")


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    handler = setup_logging("DEBUG", stream=out)
    yield out
    logging.getLogger().removeHandler(handler)


def test_text_lines_carry_the_request_id_of_the_work_they_belong_to(stream: io.StringIO) -> None:
    async def work() -> None:
        with bind_request("req-42"):
            log.info("synthesizing")
            await asyncio.create_task(asyncio.sleep(0))
            log.info("spawned work inherits it")
        log.info("outside")

    asyncio.run(work())
    lines = [line for line in stream.getvalue().splitlines() if "oyez.test" in line]
    assert "[req-42]: synthesizing" in lines[0]
    assert "[req-42]: spawned work inherits it" in lines[1]
    assert "[-]: outside" in lines[2]


def test_json_lines_are_one_object_per_event() -> None:
    out = io.StringIO()
    handler = setup_logging("INFO", json_lines=True, stream=out)
    try:
        with bind_request("abc"):
            log.warning("speaker %s refused", "media_player.kitchen")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    finally:
        logging.getLogger().removeHandler(handler)
    first, second = (json.loads(line) for line in out.getvalue().splitlines() if line)
    assert first["message"] == "speaker media_player.kitchen refused"
    assert first["level"] == "WARNING"
    assert first["logger"] == "oyez.test"
    assert first["request_id"] == "abc"
    assert "time" in first
    assert "ValueError: boom" in second["exc_info"]


def test_secrets_from_the_configuration_are_masked_in_messages_and_tracebacks(
    stream: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OYEZ_DISCORD__TOKEN", "discord-token-5678")
    monkeypatch.setenv("SEGMIND_API_KEY", "sg-env-key-9012")
    settings = config.load(
        providers={"segmind": {"api_key": "sg-config-key-1234"}},
        http={"api_token": "api-token-3456"},
    )
    register_settings_secrets(settings)
    log.info("calling with key sg-config-key-1234 and sg-env-key-9012")
    log.info("token %s", "discord-token-5678")
    try:
        raise RuntimeError("Authorization: Bearer api-token-3456 rejected")
    except RuntimeError:
        log.exception("request failed")
    text = stream.getvalue()
    for secret in ("sg-config-key-1234", "sg-env-key-9012", "discord-token-5678", "api-token-3456"):
        assert secret not in text
    assert text.count(MASK) >= 5


def test_masking_prefers_the_longest_secret_and_leaves_short_values() -> None:
    register_secret("abc")  # too short to mask safely: ordinary words would be mangled
    register_secret("longsecret")
    register_secret("longsecret-extended")
    assert mask_secrets("abc longsecret-extended") == f"abc {MASK}"
