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
