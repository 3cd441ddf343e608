"""The shapes of announcements: the data that comes in (:class:`Announcement`), where each
one is (:class:`AnnouncementStatus`), and what plays it (:class:`Sink`)."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Protocol, TypeVar

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from bot.errors import InvalidRequest, validation_problems
from bot.ops.config import AnnounceSettings, DiscordChannel
from bot.ops.logs import mask_secrets
from bot.speech import OutputProfile, Priority, RequestSource, SpeechRequest, Utterance
from bot.synthesis.prepared import PreparedRequest

ModelT = TypeVar("ModelT", bound=BaseModel)

__all__ = [
    "Announcement",
    "AnnouncementState",
    "AnnouncementStatus",
    "DiscordChannel",
    "Sink",
    "Target",
    "TargetResult",
    "as_list",
    "chime_source",
    "invalid_data_reason",
    "parse_fields",
    "request_id_of",
]

_ENTITY_ID = re.compile(r"^media_player\.[a-z0-9_]+$")
_SATELLITE_ID = re.compile(r"^assist_satellite\.[a-z0-9_]+$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def as_list(value: Any) -> Any:
    """A single target (a string or a mapping) as a list of one; None as an empty list."""
    if value is None:
        return []
    if isinstance(value, str | dict):
        return [value]
    return value


class Announcement(BaseModel):
    """What to say and where: the data of an ``oyez_announce`` event, of ``POST
    /api/v1/announce`` and of a schedule; each field's comment says what it means."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    message: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
    #: Entity ids (one, or a list). With no other target: ``announce.media_players``.
    media_player: list[str] = Field(default_factory=list)
    #: Voice satellites: ``assist_satellite.*`` entity ids (one, or a list).
    satellite: list[str] = Field(default_factory=list)
    #: ``{guild_id, channel_id}`` mappings or names from ``announce.discord_channels`` (or one).
    discord: list[DiscordChannel | str] = Field(default_factory=list)
    voice: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)] | None = None
    provider: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)] | None = None
    priority: Priority = Priority.NORMAL
    #: Seconds from ``created_at`` it may wait; after that it is dropped, never spoken late.
    ttl: float | None = Field(None, gt=0, le=86400)
    #: On speakers, first: ``announce.chime_url`` (true), a chime of ``announce.chimes`` (its
    #: name) or a URL on a host of ``announce.chime_hosts`` (see :func:`chime_source`); on
    #: satellites, true without ``announce.chime_url`` is the satellite's own chime.
    chime: bool | Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)] = False
    #: 0 to 1, set on each speaker before and restored after (where it reports its volume).
    volume: float | None = Field(None, ge=0, le=1)
    #: Speaking rate, 0.5 to 2 (1 normal), for whichever provider speaks (as ``oyez say --speed``).
    speed: float | None = Field(None, ge=0.5, le=2.0)
    #: The request id the caller chose (else a random one).
    id: str | None = None
    cache: bool = True

    @field_validator("media_player", "satellite", "discord", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return as_list(value)

    @field_validator("media_player")
    @classmethod
    def _entity_ids(cls, ids: list[str]) -> list[str]:
        for entity in ids:
            if not _ENTITY_ID.match(entity):
                raise ValueError(
                    f"{entity!r} is not a media player entity id (like media_player.kitchen)"
                )
        return list(dict.fromkeys(ids))

    @field_validator("satellite")
    @classmethod
    def _satellite_ids(cls, ids: list[str]) -> list[str]:
        for entity in ids:
            if not _SATELLITE_ID.match(entity):
                raise ValueError(
                    f"{entity!r} is not a voice satellite entity id (like assist_satellite.kitchen)"
                )
        return list(dict.fromkeys(ids))

    @field_validator("id")
    @classmethod
    def _id(cls, value: str | None) -> str | None:
        if value is not None and not _REQUEST_ID.match(value):
            raise ValueError("must be 1 to 64 letters, digits or . _ : -")
        return value

    @classmethod
    def parse(cls, data: Any) -> Announcement:
        """Validate announcement data from an edge.

        Raises :class:`InvalidRequest` naming every wrong field (the values themselves are not
        echoed, as they may be long or private).
        """
        return parse_fields(cls, data, "announcement")


def chime_source(chime: bool | str, settings: AnnounceSettings) -> str | None:
    """Where ``chime`` comes from: a URL or a local file path, None for no chime. Only the
    owner's configuration names them: ``true`` is ``announce.chime_url`` (else the chime named
    ``default``), a name one of ``announce.chimes``, a URL one on a host of
    ``announce.chime_hosts``. Raises :class:`InvalidRequest` naming why anything else is refused
    (an announcement must not make Oyez fetch what its sender chose)."""
    if chime is False:
        return None
    if chime is True:
        return str(settings.chime_url) if settings.chime_url else settings.chimes.get("default")
    named = settings.chimes.get(chime)
    if named is not None:
        return named
    try:
        url = AnyHttpUrl(chime)
    except ValueError:
        known = ", ".join(sorted(settings.chimes)) or "none are configured"
        raise InvalidRequest(
            f"invalid announcement: chime: {chime[:60]!r} is neither a named chime "
            f"(announce.chimes: {known}) nor a URL"
        ) from None
    host = (url.host or "").lower().strip("[]").rstrip(".")
    if host not in settings.chime_hosts:
        raise InvalidRequest(
            f"invalid announcement: chime: the host {host[:60]!r} is not in "
            "announce.chime_hosts; name a configured chime (announce.chimes) or ask the owner "
            "to list the host"
        )
    return str(url)


def invalid_data_reason(
    error: ValidationError, what: str, messages: Mapping[tuple[str, str], str] | None = None
) -> str:
    """``invalid <what>: field: problem; ...`` for a validation error. Values are not echoed
    (they may be long or private), except where a validator names them. ``messages`` replaces
    pydantic's message for a (field, error type) pair."""
    problems = validation_problems(error, what, brief=True, messages=messages)
    return f"invalid {what}: " + "; ".join(problems)


def parse_fields(
    model: type[ModelT],
    data: Any,
    what: str,
    messages: Mapping[tuple[str, str], str] | None = None,
) -> ModelT:
    """``data`` from an edge (a mapping of fields) validated as ``model``. Raises
    :class:`InvalidRequest` ``invalid <what>: ...`` naming every wrong field (see
    :func:`invalid_data_reason`)."""
    if isinstance(data, model):
        return data
    if not isinstance(data, Mapping):
        raise InvalidRequest(
            f"invalid {what}: expected a mapping of fields, got {type(data).__name__}"
        )
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise InvalidRequest(invalid_data_reason(exc, what, messages)) from None


class AnnouncementState(StrEnum):
    """Where an announcement is. The last five are final."""

    QUEUED = "queued"
    SPEAKING = "speaking"
    DONE = "done"  # every target played it
    PARTIAL = "partial"  # some targets played it, some failed
    FAILED = "failed"  # invalid, or no target played it
    EXPIRED = "expired"  # its ttl ran out before it could be spoken
    SUPPRESSED = "suppressed"  # a duplicate within the window, or quiet hours

    @property
    def final(self) -> bool:
        return self not in (AnnouncementState.QUEUED, AnnouncementState.SPEAKING)


@dataclass(slots=True)
class TargetResult:
    """How one target fared: ``target`` is ``media_player.x``, ``assist_satellite.x`` or
    ``discord:GUILD/CHANNEL``;
    ``expired`` that it failed because the announcement's ttl ran out while it waited."""

    target: str
    ok: bool
    error: str | None = None
    duration_s: float | None = None
    expired: bool = False


@dataclass(slots=True)
class AnnouncementStatus:
    """The state of one announcement; ``code`` says why it did not play (``invalid``,
    ``expired``, ``duplicate``, ``quiet_hours``, ``no_target``, ``failed``)."""

    id: str
    source: RequestSource
    state: AnnouncementState
    message: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished_at: datetime | None = None
    provider: str | None = None
    voice: str | None = None
    duration_s: float | None = None
    cached: bool | None = None
    targets: list[TargetResult] = field(default_factory=list)
    code: str | None = None
    reason: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def as_json(self) -> dict[str, Any]:
        """The JSON shape of ``GET /api/v1/requests/{id}`` (and of the Home Assistant events);
        secrets a provider's error quoted are masked (:func:`~bot.ops.logs.mask_secrets`)."""
        return {
            "request_id": self.id,
            "source": self.source.value,
            "state": self.state.value,
            "message": self.message,
            "created_at": self.created_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "provider": self.provider,
            "voice": self.voice,
            "duration_s": round(self.duration_s, 3) if self.duration_s is not None else None,
            "cached": self.cached,
            "targets": [
                {
                    "target": t.target,
                    "ok": t.ok,
                    "error": _masked(t.error),
                    "duration_s": t.duration_s,
                }
                for t in self.targets
            ],
            "code": self.code,
            "reason": _masked(self.reason),
        }


Target = str | DiscordChannel


def _masked(text: str | None) -> str | None:
    return mask_secrets(text) if text is not None else None


class Sink(Protocol):
    """Plays announcements on one kind of target.

    ``kind`` is the announcement field it serves (``media_player``, ``satellite`` or
    ``discord``);
    ``profile`` the audio it wants. :meth:`deliver` gets every target of that kind at once (a
    speaker sink synthesizes once for all of its speakers) and returns one result per target,
    in order, plus the utterance that played (None when none did). It must not raise for a
    target that fails: that target's result carries the error. ``prepared`` is ``request``
    already checked by the pipeline (None when the announcer has no pipeline): a sink that
    speaks it as it is need not prepare it again.
    """

    kind: ClassVar[str]
    profile: OutputProfile

    async def deliver(
        self,
        targets: list[Target],
        request: SpeechRequest,
        announcement: Announcement,
        prepared: PreparedRequest | None = None,
    ) -> tuple[list[TargetResult], Utterance | None]: ...


def request_id_of(data: Any) -> str:
    """The caller's request id when it is a valid one, else a new one."""
    if isinstance(data, Mapping):
        given = data.get("id")
        if isinstance(given, str) and _REQUEST_ID.match(given):
            return given
    return uuid.uuid4().hex
