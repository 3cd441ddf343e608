"""What a message read aloud sounds like, and the guild settings that choose what is read."""

from pathlib import Path

import pytest

from integrations.discord.reading import speakable


@pytest.mark.parametrize(
    ("content", "attachments", "said"),
    [
        (
            "Look at https://www.Example.com/a/b?c=1 please",
            [],
            "Look at a link to example.com please",
        ),
        ("<https://docs.python.org/3/> is good", [], "a link to docs.python.org is good"),
        ("nice <:party_parrot:1234> one", [], "nice party parrot one"),
        ("see this", ["cat.png"], "see this, with an attachment named cat.png"),
        ("", ["a.png", "b.pdf", "c.txt"], "3 attachments: a.png, b.pdf and c.txt"),
        ("  lots   of\n\nspace ", [], "lots of space"),
        ("", [], ""),
    ],
)
def test_messages_become_speech(content: str, attachments: list[str], said: str) -> None:
    assert speakable(content, attachments, 300) == said


def test_long_messages_are_cut_at_a_word() -> None:
    assert speakable("one two three four five", [], 12) == "one two, and so on"


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ("sooooooo good!!!!!!!", "soo good!!!"),
        ("10000 people... wow", "10000 people... wow"),  # digits and an ellipsis stay
        ("I love 🍕 and 👍🏽", "I love pizza and thumbs up"),
        ("the answer is ||Rosebud||.", "the answer is spoiler."),
        ("run ```rm -rf /tmp/x``` then", "run a code block then"),
        ("ask <@3001> in <#2001> or <@&55>", "ask Bob in general or Helpers"),
        ("hi <@999>", "hi someone"),
    ],
)
def test_chat_is_cleaned_for_speech(content: str, said: str) -> None:
    names = {"3001": "Bob", "2001": "general", "55": "Helpers"}
    assert speakable(content, [], 300, names=names) == said


@pytest.mark.parametrize(
    ("repeats", "said"),
    [
        (2, "Yess, soo good, coffee"),
        (3, "Yesss, sooo good, coffee"),
        (5, "Yesssss, sooo good, coffee"),
    ],
)
def test_the_servers_repeat_limit_cuts_repeated_letters(repeats: int, said: str) -> None:
    # a double letter is spelling ("coffee"), never cut
    assert speakable("Yesssssss, sooo good, coffee", [], 300, repeats=repeats) == said


def test_emoji_can_be_dropped() -> None:
    assert speakable("I love 🍕 and 👍🏽!", [], 300, emoji="drop") == "I love and!"


def test_the_length_cap_in_seconds_follows_the_speed() -> None:
    from integrations.discord.chat import CHARS_PER_SECOND, chars_for

    assert chars_for(10) == int(10 * CHARS_PER_SECOND)
    assert chars_for(10, speed=2.0) == 2 * chars_for(10)


def test_the_name_is_said_when_the_speaker_changes_or_after_a_pause() -> None:
    from integrations.discord.names import SpeakerTurns

    now = [0.0]
    turns = SpeakerTurns(clock=lambda: now[0])
    assert turns.name_due(1, 10, 60)  # the first message
    now[0] = 30
    assert not turns.name_due(1, 10, 60)  # the same speaker, soon after
    assert turns.name_due(2, 10, 60)  # another guild keeps its own turns
    assert turns.name_due(1, 20, 60)  # another speaker
    now[0] = 100
    assert turns.name_due(1, 10, 60)  # a new speaker again
    now[0] = 161
    assert turns.name_due(1, 10, 60)  # after a pause of 61 s
    assert turns.name_due(1, 10, 0)  # a gap of 0: every time


async def test_settings_stored_before_voice_chat_reading_have_it_on(tmp_path: Path) -> None:
    from bot.ops.store import open_state
    from integrations.discord.guilds import _SCHEMA, GuildSettingsStore

    old_row = '{"voice": "alba", "read_channel": 42, "skip_prefix": "!"}'  # no read_voice_chat
    db = open_state(tmp_path, _SCHEMA)
    db.execute("INSERT INTO discord_guild_settings VALUES (?, ?)", (7, old_row))
    db.close()
    store = GuildSettingsStore(tmp_path)
    try:
        settings = await store.get(7)
        assert settings.read_voice_chat is True
        assert (settings.voice, settings.read_channel) == ("alba", 42)
        await store.put(7, settings.model_copy(update={"read_voice_chat": False}))
        assert (await store.get(7)).read_voice_chat is False
    finally:
        await store.close()
