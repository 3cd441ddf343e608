"""The arrival order of ``/say``: requests reach a guild's queue in the order they were made.

An interaction's snowflake holds when it was made. A request waits for the ones made before it
to be queued (or refused) first, however long each takes to be checked, and the queue keeps
that order (:meth:`GuildPlayer.enqueue`'s ``arrived``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import discord

__all__ = ["Arrival", "ArrivalOrder", "arrival_of"]

#: When a request was made (Unix ms) and a tie-breaker (its snowflake).
Arrival = tuple[float, int]


def arrival_of(interaction: discord.Interaction) -> Arrival:
    """When ``interaction`` was made, from its snowflake."""
    return discord.utils.snowflake_time(interaction.id).timestamp() * 1000, interaction.id


class ArrivalOrder:
    """The ``/say`` requests of each guild still on their way to the queue, by arrival."""

    def __init__(self) -> None:
        self._turns: dict[int, list[Arrival]] = {}
        self._turn_taken = asyncio.Event()

    @contextlib.contextmanager
    def on_the_way(self, guild_id: int, arrived: Arrival) -> Iterator[None]:
        """A request of ``guild_id`` that is being checked and queued, for the time it takes."""
        turns = self._turns.setdefault(guild_id, [])
        turns.append(arrived)
        try:
            yield
        finally:
            turns.remove(arrived)
            self._turn_taken.set()

    async def wait_turn(self, guild_id: int, arrived: Arrival) -> None:
        """Return once every request of ``guild_id`` made before ``arrived`` is queued."""
        while min(self._turns.get(guild_id) or [arrived]) < arrived:
            self._turn_taken.clear()
            await self._turn_taken.wait()
