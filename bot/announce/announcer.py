"""The :class:`Announcer`: one message from Home Assistant, the HTTP API or a schedule spoken
on several targets (speakers, Discord voice channels).

It checks the data (a clear reason, never a crash), drops what is stale (``ttl``) or held back
(:mod:`bot.announce.policy`), then gives each kind of target to its sink, all at once: one
target failing does not stop the others. Each announcement ends in an ``AnnouncementStatus``
that listeners receive and ``GET /api/v1/requests/{id}`` shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.announce.model import (
    Announcement,
    AnnouncementState,
    AnnouncementStatus,
    Sink,
    Target,
    TargetResult,
    chime_source,
    request_id_of,
)
from bot.announce.policy import Suppression
from bot.announce.shared import StatusBoard
from bot.errors import InvalidRequest, OyezError, RequestExpired
from bot.ops.config import Settings
from bot.ops.logs import bind_request
from bot.ops.metrics import ANNOUNCEMENTS
from bot.speech import RequestSource, SpeechRequest
from bot.synthesis.prepared import PreparedRequest

__all__ = ["Announcer", "Listener"]

log = logging.getLogger(__name__)

#: Finished announcements kept for ``GET /api/v1/requests/{id}`` (running ones are always kept).
KEPT_STATUSES = 1000

Listener = Callable[[AnnouncementStatus], Awaitable[None]]


class Announcer:
    """Runs announcements from every source. Create inside the running event loop.

    ``prepare`` (the pipeline's :meth:`~bot.synthesis.pipeline.SpeechPipeline.prepare`) checks
    each announcement's request before any sink gets it, and what it returns goes to the sinks
    as ``prepared`` (None: nothing to hand on). ``clock`` (Unix seconds) is for tests of ttl,
    duplicates and quiet hours. ``board``, when
    set, gets each status as it changes, so that other processes can answer for it (see
    :meth:`find`).
    """

    def __init__(
        self,
        settings: Settings,
        prepare: Callable[[SpeechRequest], Awaitable[PreparedRequest | None]] | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.prepare = prepare
        self.clock = clock
        self.sinks: dict[str, Sink] = {}
        self.listeners: list[Listener] = []
        self._statuses: OrderedDict[str, AnnouncementStatus] = OrderedDict()
        self.suppression = Suppression(settings, clock)
        self._tasks: set[asyncio.Task[None]] = set()
        self.board: StatusBoard | None = None

    def add_sink(self, sink: Sink) -> None:
        self.sinks[sink.kind] = sink

    def add_listener(self, listener: Listener) -> None:
        """``listener(status)`` is awaited once per announcement, when it reaches a final state."""
        self.listeners.append(listener)

    def status(self, request_id: str) -> AnnouncementStatus | None:
        return self._statuses.get(request_id)

    async def find(self, request_id: str) -> dict[str, Any] | None:
        """The JSON status of ``request_id``: this process's, else the :attr:`board`'s (another
        process's); None when neither has it."""
        status = self.status(request_id)
        if status is not None:
            return status.as_json()
        if self.board is None:
            return None
        return await self.board.find(request_id)

    async def _publish(self, status: AnnouncementStatus) -> None:
        """Show ``status`` on the board, if there is one and it is a kept status. A board that
        cannot be reached costs the other processes' view, never the announcement."""
        if self.board is None or self._statuses.get(status.id) is not status:
            return
        try:
            await self.board.publish(status.id, status.as_json())
        except Exception as exc:
            log.warning("announcement %s: its status cannot be shared: %s", status.id, exc)

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
            chime_source(announcement.chime, self.settings.announce)  # refused now: 422
        except InvalidRequest as exc:
            given = data.id if isinstance(data, Announcement) else None
            request_id = given or request_id_of(data)
            # kept for GET /requests/{id} only under an id the caller chose: a flood of bad
            # data pushes out no one else's result
            chosen = given is not None or (
                isinstance(data, Mapping) and data.get("id") == request_id
            )
            status = self._new_status(request_id, source, None, created, keep=chosen)
            await self._finish(status, AnnouncementState.FAILED, "invalid", str(exc))
            return status
        status = self._new_status(
            announcement.id or uuid.uuid4().hex, source, announcement.message, created
        )
        await self._publish(status)
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
        self,
        request_id: str,
        source: RequestSource,
        message: str | None,
        created: datetime,
        *,
        keep: bool = True,
    ) -> AnnouncementStatus:
        """A queued status; ``keep``: findable by :meth:`status` (until evicted when final),
        unless a running one has its id (that one stays findable)."""
        status = AnnouncementStatus(
            request_id, source, AnnouncementState.QUEUED, message, created_at=created
        )
        running = self._statuses.get(request_id)
        if not keep or (running is not None and not running.done.is_set()):
            return status
        self._statuses[request_id] = status
        self._statuses.move_to_end(request_id)
        self._evict()
        return status

    def _evict(self) -> None:
        """Drop the oldest finished statuses beyond :data:`KEPT_STATUSES`; never a running one."""
        excess = len(self._statuses) - KEPT_STATUSES
        if excess <= 0:
            return
        finished = [key for key, kept in self._statuses.items() if kept.done.is_set()]
        for key in finished[:excess]:
            del self._statuses[key]

    def targets(self, announcement: Announcement) -> dict[str, list[Target]]:
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
        satellites: list[Target] = list(announcement.satellite)
        if not players and not channels and not satellites:
            players = list(self.settings.announce.media_players)
        targets = {"media_player": players, "satellite": satellites, "discord": channels}
        targets = {kind: items for kind, items in targets.items() if items}
        if not targets:
            raise InvalidRequest(
                "invalid announcement: no target: give media_player, satellite and/or discord "
                "(or set announce.media_players)"
            )
        home_assistant = "Home Assistant is not connected (homeassistant.url/token)"
        for kind in targets:
            if kind not in self.sinks:
                how = {
                    "media_player": home_assistant,
                    "satellite": home_assistant,
                    "discord": "the Discord bot is not running (discord.token)",
                }[kind]
                raise InvalidRequest(f"cannot announce to {kind} targets: {how}")
        return targets

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
            targets = self.targets(announcement)
        except InvalidRequest as exc:
            await self._finish(status, AnnouncementState.FAILED, "invalid", str(exc))
            return
        every = [t for items in targets.values() for t in items]
        suppressed = await self.suppression.reason(announcement, every, status.id)
        if suppressed is not None:
            await self._finish(status, AnnouncementState.SUPPRESSED, *suppressed)
            return
        requests = {
            kind: self._request(status, announcement, kind, requester, expires) for kind in targets
        }
        checked, prepared = await self._checked(status, next(iter(requests.values())))
        if not checked:
            return
        status.state = AnnouncementState.SPEAKING
        await self._publish(status)
        log.info(
            "announcement %s from %s: %d target(s)", status.id, status.source.value, len(every)
        )
        await self._deliver(status, announcement, targets, requests, prepared)
        await self._conclude(status)

    def _request(
        self,
        status: AnnouncementStatus,
        announcement: Announcement,
        kind: str,
        requester: str | None,
        expires: datetime,
    ) -> SpeechRequest:
        """The speech request of ``announcement`` for the sink of ``kind``."""
        return SpeechRequest.build(
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
            speed=announcement.speed,
        )

    async def _checked(
        self, status: AnnouncementStatus, request: SpeechRequest
    ) -> tuple[bool, PreparedRequest | None]:
        """Whether ``request`` passes ``prepare`` (an unknown voice fails now, with its
        reason), and what it prepared (None without ``prepare``); when it does not pass,
        ``status`` is final."""
        if self.prepare is None:
            return True, None
        try:
            prepared = await self.prepare(request)
        except RequestExpired as exc:  # its ttl ran out while it was checked
            await self.suppression.forget(status.id)
            await self._finish(status, AnnouncementState.EXPIRED, "expired", str(exc))
            return False, None
        except OyezError as exc:
            await self.suppression.forget(status.id)
            await self._finish(status, AnnouncementState.FAILED, "invalid", str(exc))
            return False, None
        return True, prepared

    async def _deliver(
        self,
        status: AnnouncementStatus,
        announcement: Announcement,
        targets: dict[str, list[Target]],
        requests: dict[str, SpeechRequest],
        prepared: PreparedRequest | None,
    ) -> None:
        """Every sink at once; their results (a failed sink: each of its targets failed) and
        the first utterance that played go into ``status``. Each sink gets its request as
        ``prepared`` too: the requests differ only in their output profile, which preparing
        does not read."""
        outcomes = await asyncio.gather(
            *(
                self.sinks[kind].deliver(
                    items,
                    requests[kind],
                    announcement,
                    None if prepared is None else replace(prepared, request=requests[kind]),
                )
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

    async def _conclude(self, status: AnnouncementStatus) -> None:
        """The final state from the targets' results: done, partial, expired or failed."""
        failed = [t for t in status.targets if not t.ok]
        await self.suppression.forget(status.id, {t.target for t in failed})
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
        await self._publish(status)
        for listener in self.listeners:
            try:
                await listener(status)
            except Exception:
                log.exception("announcement %s: a listener failed", status.id)
        status.done.set()
