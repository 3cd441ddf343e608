"""Announcement data: parsed and normalised at the edge."""

from __future__ import annotations

import pytest

from bot.announce.model import Announcement
from bot.errors import InvalidRequest
from bot.ops.config import DiscordChannel


def test_targets_are_normalised() -> None:
    announcement = Announcement.parse(
        {
            "message": "  hi  ",
            "media_player": ["media_player.a", "media_player.a", "media_player.b"],
            "discord": {"guild_id": 1, "channel_id": 2},
        }
    )
    assert announcement.message == "hi"
    assert announcement.media_player == ["media_player.a", "media_player.b"]
    assert announcement.discord == [DiscordChannel(guild_id=1, channel_id=2)]
    with pytest.raises(InvalidRequest, match="message: required"):
        Announcement.parse({})
