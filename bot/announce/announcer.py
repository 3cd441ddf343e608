"""Announcements: one message spoken on several targets (speakers, Discord voice channels).

Home Assistant events, the HTTP API and schedules all hand an :class:`Announcement` to the
:class:`Announcer`. It checks the data (a clear reason when it is wrong, never a crash), drops
what is stale (``ttl``), what repeats within ``announce.duplicate_window_s`` and what falls in
quiet hours (only ``priority: high`` passes), then gives each kind of target to its
:class:`Sink` (``media_player`` → Home Assistant speakers, ``discord`` → a voice channel's
queue), all at once. One target failing does not stop the others. Every announcement ends in an
:class:`AnnouncementStatus` that listeners receive (Home Assistant fires ``oyez_announce_done``
or ``oyez_announce_failed`` from it) and that ``GET /api/v1/requests/{id}`` shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Protocol

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from bot.errors import InvalidRequest, OyezError, RequestExpired, validation_problems
from bot.ops.config import DiscordChannel, Settings
from bot.ops.logs import bind_request
from bot.ops.metrics import ANNOUNCEMENTS
from bot.speech import OutputProfile, Priority, RequestSource, SpeechRequest, Utterance

__all__ = [
    "Announcement",
    "AnnouncementState",
    "AnnouncementStatus",
    "Announcer",
    "DiscordChannel",
    "Sink",
    "Target",
    "TargetResult",
    "as_list",
    "invalid_announcement_reason",
    "invalid_data_reason",
]

log = logging.getLogger(__name__)

_ENTITY_ID = re.compile(r"^media_player\.[a-z0-9_]+$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
#: Finished announcements kept for ``GET /api/v1/requests/{id}``.
KEPT_STATUSES = 1000


def as_list(value: Any) -> Any:
    """A single target (a string or a mapping) as a list of one; None as an empty list."""
    if value is None:
        return []
    if isinstance(value, str | dict):
        return [value]
    return value


class Announcement(BaseModel):
    """What to say and where: the data of an ``oyez_announce`` event, of ``POST
    /api/v1/announce`` and of a schedule.

    ``media_player`` is an entity id or a list of them; ``discord`` a ``{guild_id,
    channel_id}`` mapping, a name from ``announce.discord_channels``, or a list of those. With
    neither, ``announce.media_players`` is used. ``ttl`` (seconds, from ``created_at``) is how
    long the announcement may wait: after it, it is dropped, never spoken late. ``chime`` plays
    ``announce.chime_url`` (``true``) or the given URL first, on speakers. ``volume`` (0 to 1)
    is set on each speaker before and restored after, where the speaker reports its volume.
    ``id`` lets the caller choose the request id (otherwise a random one).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    message: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
    media_player: list[str] = Field(default_factory=list)
    discord: list[DiscordChannel | str] = Field(default_factory=list)
    voice: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)] | None = None
    provider: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)] | None = None
    priority: Priority = Priority.NORMAL
    ttl: float | None = Field(None, gt=0, le=86400)
    chime: bool | AnyHttpUrl = False
    volume: float | None = Field(None, ge=0, le=1)
    id: str | None = None
    cache: bool = True

    @field_validator("media_player", "discord", mode="before")
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
        if not isinstance(data, Mapping):
            raise InvalidRequest(
                f"invalid announcement: expected a mapping of fields, got {type(data).__name__}"
            )
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise InvalidRequest(invalid_announcement_reason(exc)) from None


def invalid_data_reason(
    error: ValidationError, what: str, messages: Mapping[tuple[str, str], str] | None = None
) -> str:
    """``invalid <what>: field: problem; ...`` for a validation error. Values are not echoed
    (they may be long or private), except where a validator names them. ``messages`` replaces
    pydantic's message for a (field, error type) pair."""
    problems = validation_problems(error, what, brief=True, messages=messages)
    return f"invalid {what}: " + "; ".join(problems)


def invalid_announcement_reason(error: ValidationError) -> str:
    """``invalid announcement: field: problem; ...`` for a validation error."""
    return invalid_data_reason(error, "announcement")


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
    """How one target fared: ``target`` is ``media_player.x`` or ``discord:GUILD/CHANNEL``;
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
        """The JSON shape of ``GET /api/v1/requests/{id}`` (and of the Home Assistant events)."""
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
                {"target": t.target, "ok": t.ok, "error": t.error, "duration_s": t.duration_s}
                for t in self.targets
            ],
            "code": self.code,
            "reason": self.reason,
        }


Target = str | DiscordChannel


class Sink(Protocol):
    """Plays announcements on one kind of target.

    ``kind`` is the announcement field it serves (``media_player`` or ``discord``);
    ``profile`` the audio it wants. :meth:`deliver` gets every target of that kind at once (a
    speaker sink synthesizes once for all of its speakers) and returns one result per target,
    in order, plus the utterance that played (None when none did). It must not raise for a
    target that fails: that target's result carries the error.
    """

    kind: ClassVar[str]
    profile: OutputProfile

    async def deliver(
        self, targets: list[Target], request: SpeechRequest, announcement: Announcement
    ) -> tuple[list[TargetResult], Utterance | None]: ...


Listener = Callable[[AnnouncementStatus], Awaitable[None]]


class Announcer:
    """Runs announcements from every source. Create inside the running event loop.

    ``clock`` (Unix seconds) is for tests of ttl, duplicates and quiet hours.
    """

    def __init__(
        self,
        settings: Settings,
        prepare: Callable[[SpeechRequest], Awaitable[object]] | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.prepare = prepare
        self.clock = clock
        self.sinks: dict[str, Sink] = {}
        self.listeners: list[Listener] = []
        self._statuses: OrderedDict[str, AnnouncementStatus] = OrderedDict()
        self._recent: dict[tuple[str, str], tuple[float, str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def add_sink(self, sink: Sink) -> None:
        self.sinks[sink.kind] = sink

    def add_listener(self, listener: Listener) -> None:
        """``listener(status)`` is awaited once per announcement, when it reaches a final state."""
        self.listeners.append(listener)

    def status(self, request_id: str) -> AnnouncementStatus | None:
        return self._statuses.get(request_id)

    # -- entry ---------------------------------------------------------------------------------

    async def submit(
        self,
        data: Any,
        source: RequestSource,
        *,
        created_at: datetime | None = None,
        requester: str | None = None,
    ) -> AnnouncementStatus:
        """Accept announcement data (a mapping or an :class:`Announcement`) and start it.

        Returns at once with the status (its ``done`` event is set when it is final). Bad data,
        a stale, duplicate or quiet-hours announcement end here with a final status, reported
        to the listeners like any other; nothing raises. ``created_at`` is when the source
        made it (a Home Assistant event's ``time_fired``), which the ttl counts from.
        """
        now = datetime.fromtimestamp(self.clock(), UTC)
        created = min(created_at, now) if created_at is not None else now
        try:
            announcement = data if isinstance(data, Announcement) else Announcement.parse(data)
        except InvalidRequest as exc:
            request_id = _id_of(data)
            status = self._new_status(request_id, source, None, created)
            await self._finish(status, AnnouncementState.FAILED, "invalid", str(exc))
            return status
        status = self._new_status(
            announcement.id or uuid.uuid4().hex, source, announcement.message, created
        )
        task = asyncio.create_task(
            self._run(status, announcement, requester), name=f"oyez-announce-{status.id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return status

    async def announce(self, data: Any, source: RequestSource, **kwargs: Any) -> AnnouncementStatus:
        """:meth:`submit` and wait until the announcement is final."""
        status = await self.submit(data, source, **kwargs)
        await status.done.wait()
        return status

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- inside --------------------------------------------------------------------------------

    def _new_status(
        self, request_id: str, source: RequestSource, message: str | None, created: datetime
    ) -> AnnouncementStatus:
        status = AnnouncementStatus(
            request_id, source, AnnouncementState.QUEUED, message, created_at=created
        )
        self._statuses[request_id] = status
        self._statuses.move_to_end(request_id)
        while len(self._statuses) > KEPT_STATUSES:
            self._statuses.popitem(last=False)
        return status

    def _targets(self, announcement: Announcement) -> dict[str, list[Target]]:
        """Targets by sink kind; names resolved. Raises InvalidRequest."""
        channels: list[Target] = []
        named = self.settings.announce.discord_channels
        for target in announcement.discord:
            if isinstance(target, str):
                channel = named.get(target)
                if channel is None:
                    known = ", ".join(sorted(named)) or "none are configured"
                    raise InvalidRequest(
                        f"unknown discord target {target!r} (announce.discord_channels: {known})"
                    )
                target = channel
            if target not in channels:
                channels.append(target)
        players: list[Target] = list(announcement.media_player)
        if not players and not channels:
            players = list(self.settings.announce.media_players)
        targets = {"media_player": players, "discord": channels}
        targets = {kind: items for kind, items in targets.items() if items}
        if not targets:
            raise InvalidRequest(
                "invalid announcement: no target: give media_player and/or discord "
                "(or set announce.media_players)"
            )
        for kind in targets:
            if kind not in self.sinks:
                how = {
                    "media_player": "Home Assistant is not connected (homeassistant.url/token)",
                    "discord": "the Discord bot is not running (discord.token)",
                }[kind]
                raise InvalidRequest(f"cannot announce to {kind} targets: {how}")
        return targets

    def _suppressed(
        self, announcement: Announcement, targets: dict[str, list[Target]], status_id: str
    ) -> tuple[str, str] | None:
        now = self.clock()
        quiet = self.settings.announce.quiet_hours
        if quiet is not None and announcement.priority is not Priority.HIGH:
            local = datetime.fromtimestamp(now, self.settings.zone()).time()
            if quiet.contains(local):
                return "quiet_hours", (
                    f"quiet hours ({quiet.start:%H:%M}-{quiet.end:%H:%M}): only priority high "
                    "is spoken"
                )
        window = self.settings.announce.duplicate_window_s
        self._recent = {k: v for k, v in self._recent.items() if now - v[0] < window}
        text = " ".join(announcement.message.casefold().split())
        keys = [(text, str(t)) for items in targets.values() for t in items]
        earlier = next((self._recent[k][1] for k in keys if k in self._recent), None)
        if window > 0 and earlier is not None:
            return "duplicate", (
                f"the same message went to the same target within {window:g} s (request {earlier})"
            )
        for key in keys:
            self._recent[key] = (now, status_id)
        return None

    def _forget(self, status_id: str, targets: set[str] | None = None) -> None:
        """Let the message of ``status_id`` go again to ``targets`` (all: None), which did not
        play it: only what was spoken counts as a duplicate."""
        for key, (_, owner) in list(self._recent.items()):
            if owner == status_id and (targets is None or key[1] in targets):
                del self._recent[key]

    async def _run(
        self, status: AnnouncementStatus, announcement: Announcement, requester: str | None
    ) -> None:
        try:
            with bind_request(status.id):
                await self._speak(status, announcement, requester)
        except asyncio.CancelledError:
            if not status.state.final:
                await self._finish(status, AnnouncementState.FAILED, "failed", "Oyez stopped")
            raise
        except Exception as exc:  # a bug must not lose the announcement silently
            log.exception("announcement %s: unexpected error", status.id)
            await self._finish(status, AnnouncementState.FAILED, "failed", f"internal error: {exc}")

    async def _speak(
        self, status: AnnouncementStatus, announcement: Announcement, requester: str | None
    ) -> None:
        ttl = announcement.ttl or self.settings.announce.ttl_s
        expires = status.created_at + timedelta(seconds=ttl)
        now = datetime.fromtimestamp(self.clock(), UTC)
        if now >= expires:
            late = (now - expires).total_seconds()
            await self._finish(
                status, AnnouncementState.EXPIRED, "expired",
                f"older than its ttl of {ttl:g} s ({late:.0f} s late); not spoken",
            )  # fmt: skip
            return
        try:
            targets = self._targets(announcement)
        except InvalidRequest as exc:
            await self._finish(status, AnnouncementState.FAILED, "invalid", str(exc))
            return
        suppressed = self._suppressed(announcement, targets, status.id)
        if suppressed is not None:
            await self._finish(status, AnnouncementState.SUPPRESSED, *suppressed)
            return
        requests = {
            kind: SpeechRequest.build(
                id=status.id,
                text=announcement.message,
                voice=announcement.voice,
                provider=announcement.provider,
                priority=announcement.priority,
                output=self.sinks[kind].profile,
                source=status.source,
                requester=requester,
                created_at=status.created_at,
                expires_at=expires,
                cache=announcement.cache,
            )
            for kind in targets
        }
        if self.prepare is not None:  # an unknown voice fails now, with its reason
            try:
                await self.prepare(next(iter(requests.values())))
            except RequestExpired as exc:  # its ttl ran out while it was checked
                self._forget(status.id)
                await self._finish(status, AnnouncementState.EXPIRED, "expired", str(exc))
                return
            except OyezError as exc:
                self._forget(status.id)
                await self._finish(status, AnnouncementState.FAILED, "invalid", str(exc))
                return
        status.state = AnnouncementState.SPEAKING
        log.info(
            "announcement %s from %s: %d target(s)",
            status.id,
            status.source.value,
            sum(map(len, targets.values())),
        )
        outcomes = await asyncio.gather(
            *(
                self.sinks[kind].deliver(items, requests[kind], announcement)
                for kind, items in targets.items()
            ),
            return_exceptions=True,
        )
        for (kind, items), outcome in zip(targets.items(), outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if isinstance(outcome, asyncio.CancelledError):
                    raise outcome
                log.error("announcement %s: %s sink failed: %s", status.id, kind, outcome)
                reason = str(outcome) or type(outcome).__name__
                status.targets += [TargetResult(str(t), False, reason) for t in items]
                continue
            results, utterance = outcome
            status.targets += results
            if utterance is not None and status.provider is None:
                status.provider = utterance.voice.provider
                status.voice = utterance.voice.id
                status.duration_s = utterance.duration_s
                status.cached = utterance.cached
        failed = [t for t in status.targets if not t.ok]
        self._forget(status.id, {t.target for t in failed})
        if not failed:
            await self._finish(status, AnnouncementState.DONE, None, None)
            return
        reason = "; ".join(f"{t.target}: {t.error}" for t in failed)
        expired = all(t.expired for t in failed)
        if len(failed) == len(status.targets):
            state = AnnouncementState.EXPIRED if expired else AnnouncementState.FAILED
            await self._finish(status, state, "expired" if expired else "failed", reason)
        else:
            await self._finish(status, AnnouncementState.PARTIAL, "failed", reason)

    async def _finish(
        self,
        status: AnnouncementStatus,
        state: AnnouncementState,
        code: str | None,
        reason: str | None,
    ) -> None:
        status.state, status.code, status.reason = state, code, reason
        status.finished_at = datetime.fromtimestamp(self.clock(), UTC)
        ANNOUNCEMENTS.labels(source=status.source.value, state=state.value).inc()
        if state is AnnouncementState.DONE:
            log.info("announcement %s: spoken on %d target(s)", status.id, len(status.targets))
        else:
            log.warning("announcement %s: %s: %s", status.id, state.value, reason)
        for listener in self.listeners:
            try:
                await listener(status)
            except Exception:
                log.exception("announcement %s: a listener failed", status.id)
        status.done.set()


def _id_of(data: Any) -> str:
    """The caller's request id when it is a valid one, else a new one."""
    if isinstance(data, Mapping):
        given = data.get("id")
        if isinstance(given, str) and _REQUEST_ID.match(given):
            return given
    return uuid.uuid4().hex
