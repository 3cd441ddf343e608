"""JSON payloads as Discord sends them, just complete enough for discord.py 2.7 to parse.

The simulated world is fixed: one guild (:data:`GUILD_ID`) owned by alice, with a text channel
``#general``, two voice channels (``Voice`` and ``Lounge``), a stage channel (``Stage``), the
human member alice (sitting in ``Voice``) and the bot. Ids are strings, as on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "ALICE",
    "ALL_PERMISSIONS",
    "BOT",
    "GUILD_ID",
    "LOUNGE_CHANNEL_ID",
    "STAGE_CHANNEL_ID",
    "TEXT_CHANNEL_ID",
    "VOICE_CHANNEL_ID",
    "FakeUser",
    "channels",
    "guild_create",
    "interaction_create",
    "member",
    "message",
    "option_type",
    "ready",
    "voice_state",
]

Json = dict[str, Any]

GUILD_ID = "2000"
TEXT_CHANNEL_ID = "2001"
VOICE_CHANNEL_ID = "2002"
LOUNGE_CHANNEL_ID = "2003"
STAGE_CHANNEL_ID = "2004"
ALL_PERMISSIONS = "2199023255551"
JOINED_AT = "2024-01-01T00:00:00+00:00"


@dataclass(frozen=True)
class FakeUser:
    id: str
    username: str
    bot: bool = False

    def to_json(self) -> Json:
        return {
            "id": self.id,
            "username": self.username,
            "global_name": None if self.bot else self.username.title(),
            "discriminator": "0",
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
        }


BOT = FakeUser("1000", "oyez", bot=True)
ALICE = FakeUser("3000", "alice")


def member(user: FakeUser, *, guild_id: str | None = None) -> Json:
    data: Json = {
        "user": user.to_json(),
        "roles": [],
        "flags": 0,
        "joined_at": JOINED_AT,
        "deaf": False,
        "mute": False,
        "nick": None,
        "pending": False,
        "premium_since": None,
    }
    if guild_id is not None:
        data["guild_id"] = guild_id
    return data


def channels() -> list[Json]:
    common = {"permission_overwrites": [], "nsfw": False, "parent_id": None}
    return [
        {"id": TEXT_CHANNEL_ID, "type": 0, "name": "general", "position": 0, "topic": None}
        | {"last_message_id": None, "rate_limit_per_user": 0}
        | common,
        {"id": VOICE_CHANNEL_ID, "type": 2, "name": "Voice", "position": 1}
        | {"bitrate": 64000, "user_limit": 0, "rtc_region": None}
        | common,
        {"id": LOUNGE_CHANNEL_ID, "type": 2, "name": "Lounge", "position": 2}
        | {"bitrate": 64000, "user_limit": 0, "rtc_region": None}
        | common,
        {"id": STAGE_CHANNEL_ID, "type": 13, "name": "Stage", "position": 3, "topic": None}
        | {"bitrate": 64000, "user_limit": 0, "rtc_region": None}
        | common,
    ]


def channel(channel_id: str) -> Json:
    for data in channels():
        if data["id"] == channel_id:
            return data | {"guild_id": GUILD_ID}
    raise KeyError(f"no channel {channel_id} in the fake guild")


def voice_state(
    user: FakeUser,
    channel_id: str | None,
    *,
    session_id: str,
    guild_id: str = GUILD_ID,
    with_member: bool = False,
    suppress: bool | None = None,
) -> Json:
    """``suppress`` (not a speaker): by default, in the stage channel only (as Discord does
    for a member who joins a stage)."""
    data: Json = {
        "guild_id": guild_id,
        "user_id": user.id,
        "channel_id": channel_id,
        "session_id": session_id,
        "deaf": False,
        "mute": False,
        "self_deaf": False,
        "self_mute": False,
        "self_video": False,
        "self_stream": False,
        "suppress": channel_id == STAGE_CHANNEL_ID if suppress is None else suppress,
        "request_to_speak_timestamp": None,
    }
    if with_member:
        data["member"] = member(user)
    return data


def ready(*, session_id: str, resume_url: str, guild_ids: list[str]) -> Json:
    return {
        "v": 10,
        "user": BOT.to_json() | {"verified": True, "mfa_enabled": False, "flags": 0},
        "guilds": [{"id": guild_id, "unavailable": True} for guild_id in guild_ids],
        "private_channels": [],
        "relationships": [],
        "session_id": session_id,
        "resume_gateway_url": resume_url,
        "application": {"id": BOT.id, "flags": 0},
    }


def guild_create(members: list[FakeUser], voice_channels: dict[str, str | None]) -> Json:
    """``voice_channels``: user id → voice channel id (``None`` = not in voice)."""
    return {
        "id": GUILD_ID,
        "name": "Oyez Test Guild",
        "owner_id": ALICE.id,
        "unavailable": False,
        "large": False,
        "member_count": len(members),
        "icon": None,
        "features": [],
        "emojis": [],
        "stickers": [],
        "roles": [
            {"id": GUILD_ID, "name": "@everyone", "permissions": ALL_PERMISSIONS, "position": 0}
            | {"color": 0, "hoist": False, "managed": False, "mentionable": False, "flags": 0}
        ],
        "channels": channels(),
        "threads": [],
        "members": [member(user) for user in members],
        "presences": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
        "voice_states": [
            voice_state(user, channel_id, session_id=f"vs-{user.id}")
            for user in members
            if (channel_id := voice_channels.get(user.id)) is not None
        ],
        "joined_at": JOINED_AT,
        "preferred_locale": "en-US",
        "premium_tier": 0,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "mfa_level": 0,
        "nsfw_level": 0,
        "system_channel_id": None,
        "afk_channel_id": None,
        "afk_timeout": 300,
    }


@dataclass(frozen=True)
class RoleRef:
    """A role option's value (type 8); the interaction carries the role in ``resolved``."""

    id: str


@dataclass(frozen=True)
class ChannelRef:
    """A channel option's value (type 7); the interaction carries it in ``resolved``."""

    id: str


def everyone_role() -> Json:
    return {"id": GUILD_ID, "name": "@everyone", "permissions": ALL_PERMISSIONS, "position": 0} | {
        "color": 0,
        "hoist": False,
        "managed": False,
        "mentionable": False,
        "flags": 0,
    }


def resolved(values: list[Any]) -> Json:
    """The ``resolved`` data Discord sends for role and channel options."""
    data: Json = {}
    for value in values:
        if isinstance(value, RoleRef):
            assert value.id == GUILD_ID, "the fake guild has only the @everyone role"
            data.setdefault("roles", {})[value.id] = everyone_role()
        elif isinstance(value, FakeUser):
            data.setdefault("users", {})[value.id] = value.to_json()
            found = {k: v for k, v in member(value).items() if k != "user"}
            data.setdefault("members", {})[value.id] = found | {"permissions": ALL_PERMISSIONS}
        elif isinstance(value, ChannelRef):
            found = channel(value.id)
            data.setdefault("channels", {})[value.id] = found | {"permissions": ALL_PERMISSIONS}
    return data


def option_type(value: Any) -> int:
    """The application command option type for a Python value (string, integer, boolean...)."""
    if isinstance(value, RoleRef):
        return 8
    if isinstance(value, FakeUser):
        return 6
    if isinstance(value, ChannelRef):
        return 7
    if isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return 4
    if isinstance(value, float):
        return 10
    return 3


def interaction_create(
    *,
    interaction_id: str,
    token: str,
    command_id: str,
    name: str,
    options: list[Json],
    user: FakeUser,
    channel_id: str,
    command_guild_id: str | None = None,
    resolved_data: Json | None = None,
    permissions: str = ALL_PERMISSIONS,
) -> Json:
    """``permissions``: the caller's, in the channel (a decimal bit field, as Discord sends)."""
    data: Json = {"id": command_id, "name": name, "type": 1, "options": options}
    if resolved_data:
        data["resolved"] = resolved_data
    if command_guild_id is not None:
        data["guild_id"] = command_guild_id
    return {
        "id": interaction_id,
        "application_id": BOT.id,
        "type": 2,
        "token": token,
        "version": 1,
        "guild_id": GUILD_ID,
        "channel_id": channel_id,
        "channel": channel(channel_id),
        "member": member(user) | {"permissions": permissions},
        "data": data,
        "attachment_size_limit": 10_485_760,
        "locale": "en-US",
        "guild_locale": "en-US",
        "app_permissions": ALL_PERMISSIONS,
        "entitlements": [],
        "authorizing_integration_owners": {"0": GUILD_ID},
        "context": 0,
    }


def message(
    *,
    message_id: str,
    channel_id: str,
    author: FakeUser,
    content: str,
    timestamp: str,
    guild_id: str | None = GUILD_ID,
    webhook_id: str | None = None,
) -> Json:
    data: Json = {
        "id": message_id,
        "type": 0,
        "channel_id": channel_id,
        "author": author.to_json(),
        "content": content,
        "timestamp": timestamp,
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "components": [],
        "pinned": False,
        "flags": 0,
    }
    if guild_id is not None:
        data["guild_id"] = guild_id
        data["member"] = {k: v for k, v in member(author).items() if k != "user"}
    if webhook_id is not None:
        data["webhook_id"] = webhook_id
    return data
