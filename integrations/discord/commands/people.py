"""``/nick`` (how the bot says a name) and ``/dictionary add|remove|list`` (how it says words).

Replies are ephemeral; bad input (a name or entry too long, a word not in the dictionary, a
member named by someone who may not manage the server) is answered and nothing is stored.
"""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands

from bot.errors import InvalidRequest
from bot.synthesis.pronounce import MAX_ENTRY_CHARS
from integrations.discord.dictionary import PronunciationBook
from integrations.discord.names import MAX_NICK_CHARS, clean_name
from integrations.discord.preferences import Preferences

__all__ = ["DictionaryCommands", "nick_command"]

#: Characters of a reply Discord takes (2000), with room to spare.
REPLY_CHARS = 1990


def _may_name(interaction: discord.Interaction, member: discord.Member | None) -> bool:
    """Whether the caller may set ``member``'s name: their own always, others' with Manage
    Server."""
    return (
        member is None or member.id == interaction.user.id or interaction.permissions.manage_guild
    )


def nick_command(preferences: Preferences) -> app_commands.Command[Any, ..., None]:
    @app_commands.command(name="nick", description='How I say your name in "<name> said"')
    @app_commands.guild_only()
    @app_commands.describe(
        name="The name to say (none: your display name again)",
        member="Another member (needs Manage Server)",
    )
    async def nick(
        interaction: discord.Interaction,
        name: app_commands.Range[str, 1, MAX_NICK_CHARS] | None = None,
        member: discord.Member | None = None,
    ) -> None:
        """Raises :class:`InvalidRequest` for a name over :data:`MAX_NICK_CHARS` characters."""
        assert interaction.guild is not None
        if not _may_name(interaction, member):
            raise InvalidRequest("Only members who may manage the server can name others.")
        target = member or interaction.user
        cleaned = " ".join((name or "").split()) or None
        if cleaned is not None and len(cleaned) > MAX_NICK_CHARS:
            raise InvalidRequest(
                f"That name is {len(cleaned)} characters; at most {MAX_NICK_CHARS} are allowed."
            )
        await preferences.set_nick(interaction.guild.id, target.id, cleaned)
        whose = "your name" if target.id == interaction.user.id else f"{target.mention}'s name"
        said = cleaned or clean_name(target.display_name) or clean_name(target.name) or "someone"
        default = "" if cleaned else " (from the display name)"
        await interaction.response.send_message(
            f'I now say {whose} as "{said}"{default}.', ephemeral=True
        )

    return nick


class DictionaryCommands(
    app_commands.Group,
    name="dictionary",
    description="How I say words on this server",
    guild_only=True,
    default_permissions=discord.Permissions(manage_guild=True),
):
    """``/dictionary add|remove|list``: the server's pronunciation dictionary (Manage Server)."""

    def __init__(self, book: PronunciationBook) -> None:
        super().__init__()
        self.book = book

    @app_commands.command(name="add", description="Say a word another way (whole words, any case)")
    @app_commands.describe(word="The word as written", spoken_as="How to say it")
    async def add(
        self,
        interaction: discord.Interaction,
        word: app_commands.Range[str, 1, MAX_ENTRY_CHARS],
        spoken_as: app_commands.Range[str, 1, MAX_ENTRY_CHARS],
    ) -> None:
        """Raises :class:`InvalidRequest` for an empty or over-long entry."""
        assert interaction.guild is not None
        stored, said = await self.book.add(interaction.guild.id, word, spoken_as)
        await interaction.response.send_message(
            f'I now say "{stored}" as "{said}" on this server.', ephemeral=True
        )

    @app_commands.command(name="remove", description="Say a word as written again")
    @app_commands.describe(word="The word as written")
    async def remove(self, interaction: discord.Interaction, word: str) -> None:
        """Raises :class:`InvalidRequest` when the word is not in the dictionary."""
        assert interaction.guild is not None
        said = await self.book.remove(interaction.guild.id, word)
        await interaction.response.send_message(
            f'Removed "{word}" (it was said "{said}").', ephemeral=True
        )

    @app_commands.command(name="list", description="The words this server says another way")
    async def listing(self, interaction: discord.Interaction) -> None:
        assert interaction.guild is not None
        entries = await self.book.entries(interaction.guild.id)
        lines = [f'"{word}" → "{said}"' for word, said in sorted(entries.items())]
        text = "\n".join(lines) or "The dictionary is empty; add words with /dictionary add."
        await interaction.response.send_message(text[:REPLY_CHARS], ephemeral=True)
