"""The ``⚠️`` replies: Oyez's errors raised by a command are answered in one place.

A reply is ephemeral while the interaction is unanswered; after a (public) defer it is the
deferred reply. Other errors are logged as discord.py logs them. Every reply goes through
:func:`fit`: Discord refuses a longer message, and the member would see no answer at all.
"""

from __future__ import annotations

import math

import discord
from discord import app_commands

from bot.errors import OyezError
from bot.ops.logs import mask_secrets

__all__ = ["MESSAGE_MAX_CHARS", "OyezCommandTree", "PaidProviderRefused", "answer", "fit"]

#: The longest message Discord takes, characters ("up to 2000 characters",
#: https://discord.com/developers/docs/resources/message#create-message).
MESSAGE_MAX_CHARS = 2000
_CUT = " … "


def fit(message: str) -> str:
    """``message`` shortened to :data:`MESSAGE_MAX_CHARS` by cutting out its middle (an error
    quoting a long input keeps its start and the end, where the hint is)."""
    if len(message) <= MESSAGE_MAX_CHARS:
        return message
    tail = (MESSAGE_MAX_CHARS - len(_CUT)) // 3
    head = MESSAGE_MAX_CHARS - len(_CUT) - tail
    return message[:head] + _CUT + message[-tail:]


class PaidProviderRefused(app_commands.CheckFailure):
    """A paid provider asked for by a member without one of the server's paid roles."""

    def __init__(self, provider: str) -> None:
        super().__init__(
            f"{provider} is a paid provider; on this server it needs one of the roles set "
            "with /settings."
        )


async def answer(interaction: discord.Interaction, message: str) -> None:
    """Tell the caller ``message`` (secrets masked): ephemerally if still possible, else in the
    deferred reply."""
    message = fit(mask_secrets(message))
    if interaction.response.is_done():
        await interaction.edit_original_response(content=message)
    else:
        await interaction.response.send_message(message, ephemeral=True)


class OyezCommandTree(app_commands.CommandTree[discord.Client]):
    """The command tree whose :meth:`on_error` answers :class:`OyezError` and
    :class:`PaidProviderRefused` with ``⚠️ <reason>``."""

    async def on_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError, /
    ) -> None:
        cause = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        if isinstance(cause, app_commands.CommandOnCooldown):
            name = interaction.command.name if interaction.command else "That command"
            wait = max(math.ceil(cause.retry_after), 1)
            await answer(interaction, f"⏳ /{name} was used a moment ago; try again in {wait} s.")
            return
        if isinstance(cause, OyezError | PaidProviderRefused):
            await answer(interaction, f"⚠️ {cause}")
            return
        await super().on_error(interaction, error)
