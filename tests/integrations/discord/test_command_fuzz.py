"""Fuzzing the slash commands' options (hypothesis): whatever a member types into ``/say``,
``/voice``, ``/voices``, ``/settings`` or ``/schedule`` (and their autocompletes), Oyez answers:
an ephemeral ``⚠️`` reason or success, never an unanswered interaction or an uncaught error.

The real discord.py client runs against the simulated Discord; each example is one interaction
built as Discord sends it (options within the types and ranges the command declares: Discord
enforces those) and run through discord.py's own command tree. ``/say`` queues on a stand-in
player: its input is what is fuzzed here, not playback.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import discord
import pytest
from discord import app_commands
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bot.ops import config
from integrations.discord.bot import OyezBot
from tests.fakes.discord import (
    ALICE,
    GUILD_ID,
    TEXT_CHANNEL_ID,
    VOICE_CHANNEL_ID,
    FakeDiscord,
    payloads,
)
from tests.fakes.discord.fixtures import fake_discord, oyez_bot_running  # noqa: F401

Option = dict[str, Any]

FUZZ = settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
#: Discord's longest string option (characters).
STRING_MAX = 6000
#: Discord's longest message (characters): a longer answer is refused with 400.
MESSAGE_MAX = 2000

words = st.sampled_from(
    [
        "en_US-joe-medium", "piper", "piper/en_US-joe-medium", "segmind", "together", "openai",
        "tone", "0 19 * * 2", "every day", "2030-01-01T10:00:00+00:00", "Europe/Paris", "UTC",
        "bins", "Bins", "", " ", "@everyone", "<@3000>", "x" * 300, "..."
    ]
)  # fmt: skip
strings = st.one_of(
    words,
    st.text(max_size=60),
    st.text(st.characters(codec="utf-8"), max_size=400),
    st.text(min_size=MESSAGE_MAX - 50, max_size=STRING_MAX),
)


def option(name: str, kind: int, value: Any) -> Option:
    return {"name": name, "type": kind, "value": value}


def options_of(fields: dict[str, st.SearchStrategy[Option]]) -> st.SearchStrategy[list[Option]]:
    """Any subset of the optional fields (each drawn from its strategy)."""
    return st.fixed_dictionaries({}, optional=fields).map(lambda chosen: list(chosen.values()))


def text(name: str) -> st.SearchStrategy[Option]:
    return strings.map(lambda value: option(name, 3, value))


def flag(name: str) -> st.SearchStrategy[Option]:
    return st.booleans().map(lambda value: option(name, 5, value))


def number(name: str, low: int, high: int) -> st.SearchStrategy[Option]:
    return st.integers(low, high).map(lambda value: option(name, 4, value))


def subcommand(name: str, options: st.SearchStrategy[list[Option]]) -> st.SearchStrategy[Option]:
    return options.map(lambda inner: {"name": name, "type": 1, "options": inner})


say = st.tuples(text("text"), options_of({"voice": text("voice"), "provider": text("provider")}))
SAY = say.map(lambda drawn: ("say", [drawn[0], *drawn[1]]))
VOICE = st.one_of(
    subcommand("set", text("voice").map(lambda o: [o])),
    subcommand("show", st.just([])),
).map(lambda sub: ("voice", [sub]))
VOICES = options_of({"provider": text("provider")}).map(lambda o: ("voices", o))
SETTINGS = options_of(
    {
        "voice": text("voice"),
        "provider": text("provider"),
        "max_length": number("max_length", 1, 100_000),
        "paid_role": st.just(option("paid_role", 8, GUILD_ID)),  # @everyone, the fake's one role
        "clear_paid_roles": flag("clear_paid_roles"),
        "idle_timeout_s": number("idle_timeout_s", 10, 86_400),
        "name_prefix": flag("name_prefix"),
        "voice_chat": flag("voice_chat"),
    }
).map(lambda o: ("settings", o))
add = st.tuples(
    text("name"),
    text("message"),
    options_of(
        {
            "cron": text("cron"),
            "at": text("at"),
            "time_zone": text("time_zone"),
            "channel": st.just(option("channel", 7, VOICE_CHANNEL_ID)),
            "voice": text("voice"),
            "provider": text("provider"),
            "priority": st.sampled_from(["low", "normal", "high"]).map(
                lambda p: option("priority", 3, p)
            ),
            "catch_up": flag("catch_up"),
        }
    ),
).map(lambda drawn: [drawn[0], drawn[1], *drawn[2]])
SCHEDULE = st.one_of(
    subcommand("add", add),
    subcommand("list", st.just([])),
    *(subcommand(name, text("name").map(lambda o: [o])) for name in ("remove", "pause", "resume")),
).map(lambda sub: ("schedule", [sub]))


def focused(command: str, path: list[str], name: str) -> st.SearchStrategy[tuple[str, Any]]:
    """An autocomplete of option ``name`` (under subcommands ``path``) with any text typed."""

    def build(value: str) -> tuple[str, list[Option]]:
        options: list[Option] = [option(name, 3, value) | {"focused": True}]
        for sub in reversed(path):
            options = [{"name": sub, "type": 1, "options": options}]
        return command, options

    return strings.map(build)


AUTOCOMPLETES = st.one_of(
    focused("voice", ["set"], "voice"),
    focused("settings", [], "voice"),
    focused("schedule", ["add"], "time_zone"),
)


class StandInPlayer:
    """Takes what ``/say`` queues; plays nothing."""

    def enqueue(self, *_: Any, **__: Any) -> int:
        return 0


class Harness:
    """Runs one interaction at a time through ``bot``'s command tree, as discord.py does on
    ``INTERACTION_CREATE``, and records errors that reach discord.py's own handler."""

    def __init__(self, fake: FakeDiscord, bot: OyezBot) -> None:
        self.fake = fake
        self.bot = bot
        self.unhandled: list[BaseException] = []
        self._ids = itertools.count(1 << 40)
        self.command_ids = {c["name"]: c["id"] for c in fake.commands[None]}

    async def run(self, name: str, options: list[Option], *, kind: int = 2) -> discord.Interaction:
        interaction_id = str(next(self._ids))
        payload = payloads.interaction_create(
            interaction_id=interaction_id,
            token=f"tok-{interaction_id}",
            command_id=self.command_ids[name],
            name=name,
            options=options,
            user=ALICE,
            channel_id=TEXT_CHANNEL_ID,
            resolved_data=self._resolved(options),
        )
        payload["type"] = kind
        interaction: discord.Interaction = discord.Interaction(
            data=payload,  # type: ignore[arg-type]
            state=self.bot._connection,
        )
        try:
            await self.bot.tree._call(interaction)
        except app_commands.AppCommandError as exc:
            await self.bot.tree.on_error(interaction, exc)
        return interaction

    @staticmethod
    def _resolved(options: list[Option]) -> dict[str, Any]:
        refs: list[Any] = []
        for found in options:
            if found["type"] == 1:
                refs += [Harness._ref(o) for o in found["options"]]
            else:
                refs.append(Harness._ref(found))
        return payloads.resolved([r for r in refs if r is not None])

    @staticmethod
    def _ref(found: Option) -> payloads.RoleRef | payloads.ChannelRef | None:
        if found["type"] == 8:
            return payloads.RoleRef(found["value"])
        if found["type"] == 7:
            return payloads.ChannelRef(found["value"])
        return None

    def answers(self, interaction: discord.Interaction) -> list[tuple[str, bool]]:
        """``(content, ephemeral)`` of each answer: the response, then each edit of it."""
        token = f"tok-{interaction.id}"
        found = [
            (str(r.data.get("content") or ""), r.ephemeral)
            for r in self.fake.interaction_responses
            if r.interaction_id == str(interaction.id)
        ]
        edits = [f for f in self.fake.followups if f.token == token and f.method == "PATCH"]
        return found + [(f.content or "", False) for f in edits]

    def check(self, interaction: discord.Interaction) -> None:
        assert not self.unhandled, self.unhandled
        assert interaction.response.is_done(), "never answered"
        answers = self.answers(interaction)
        responses = [
            r for r in self.fake.interaction_responses if r.interaction_id == str(interaction.id)
        ]
        deferred = any(r.type == 5 for r in responses)
        for content, ephemeral in answers:
            assert len(content) <= MESSAGE_MAX
            if content.startswith("⚠️"):
                assert ephemeral or deferred, content


@pytest.fixture
async def harness(
    fake_discord: FakeDiscord,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Harness]:
    async with oyez_bot_running(config.load(data_dir=tmp_path / "data")) as bot:
        assert isinstance(bot, OyezBot)
        started = Harness(fake_discord, bot)

        async def recorded(*args: Any) -> None:  # (tree, interaction, error)
            started.unhandled.append(args[-1])

        async def stand_in(*_: Any) -> StandInPlayer:
            return StandInPlayer()

        monkeypatch.setattr(app_commands.CommandTree, "on_error", recorded)
        monkeypatch.setattr(bot.voice, "player", stand_in)
        yield started


@FUZZ
@given(command=st.one_of(SAY, VOICE, VOICES, SETTINGS, SCHEDULE))
async def test_every_command_answers_whatever_its_options(
    harness: Harness, command: tuple[str, list[Option]]
) -> None:
    name, options = command
    interaction = await harness.run(name, options)
    harness.check(interaction)
    answers = harness.answers(interaction)
    refused = any(content.startswith("⚠️") for content, _ in answers)
    event(f"/{name}: {'refused' if refused else 'done'}")  # --hypothesis-show-statistics


@FUZZ
@given(command=AUTOCOMPLETES)
async def test_every_autocomplete_answers_whatever_is_typed(
    harness: Harness, command: tuple[str, list[Option]]
) -> None:
    name, options = command
    interaction = await harness.run(name, options, kind=4)
    assert not harness.unhandled, harness.unhandled
    assert interaction.response.is_done()
