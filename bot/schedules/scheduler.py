"""The scheduler: speaks each schedule's alerts on time, as a front end of ``oyez run``.

Every ``poll_s`` it reloads the schedules (:mod:`bot.schedules.store`) if their revision
changed, so ``oyez schedule add`` in another process is picked up within a second; the HTTP
API wakes it at once. ``lead_s`` before a fire time the alert is synthesized into the audio
cache the way each sink will ask for it (:class:`WarmSink`), so it starts on the second (with
``cache.enabled: false``, when synthesis is done). A fire time up to ``grace_s`` late is
spoken; one missed by more is skipped, or with ``catch_up`` spoken once, late.

Every process running a scheduler over the same schedules tries each firing; its fire claim
(:mod:`bot.schedules.claims`, shared when ``engine.url`` is set) lets one speak it, and another
takes it over when that one dies before it was delivered (within the firing's grace).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Protocol, runtime_checkable

from pydantic import ValidationError

from bot.announce.announcer import Announcer
from bot.announce.model import Announcement, Sink, Target
from bot.errors import ConfigError, InvalidRequest
from bot.ops.config import Settings, format_validation_error
from bot.ops.store import is_lock_timeout
from bot.schedules.claims import Claim, FireClaims, LocalClaims, firing_id
from bot.schedules.model import Schedule, check_targets, target_kinds
from bot.schedules.store import Outcome, ScheduleBook, StoredSchedule
from bot.speech import RequestSource, SpeechRequest

__all__ = ["Scheduler", "WarmSink", "configured_schedules"]

log = logging.getLogger(__name__)

#: Seconds between two looks at the schedules' revision.
POLL_S = 1.0
#: Seconds before a fire time that its audio is synthesized.
LEAD_S = 30.0
#: Seconds a fire claim lasts unless renewed: how soon another process takes over a firing
#: whose claimer died.
CLAIM_LEASE_S = 6.0


@runtime_checkable
class WarmSink(Protocol):
    """A sink that makes an announcement's audio ahead the way its ``deliver`` will ask the
    pipeline for it (the Discord sink: sentence by sentence, in each target guild's words), so
    that it is a cache hit then. ``targets``: the announcement's targets of that sink."""

    async def warm(self, request: SpeechRequest, targets: list[Target]) -> None: ...


@dataclass(slots=True)
class _Entry:
    stored: StoredSchedule
    due: datetime | None
    prepared: datetime | None = None  # the fire time whose audio was synthesized ahead
    synthesis: asyncio.Task[None] | None = None


class Scheduler:
    """Fires the schedules of ``book`` through ``announcer``.

    ``synthesize`` (the pipeline's ``speak``) fills the audio cache ahead of each fire time;
    None turns pre-synthesis off (the benchmark's baseline). ``configured`` (the ``schedules:``
    of the configuration) is synced into ``book`` by :meth:`start`. ``claims`` decides which
    process speaks a firing (None: this one, :class:`LocalClaims`). ``clock`` is Unix seconds;
    tests pass one tied to the event loop's (fast-forwarded) clock.
    """

    name = "scheduler"

    def __init__(  # noqa: PLR0913 - clock, poll_s, lead_s: keyword-only test hooks
        self,
        settings: Settings,
        announcer: Announcer,
        book: ScheduleBook,
        *,
        synthesize: Callable[[SpeechRequest], Awaitable[object]] | None = None,
        configured: Sequence[Schedule] = (),
        clock: Callable[[], float] = time.time,
        poll_s: float = POLL_S,
        lead_s: float = LEAD_S,
        claims: FireClaims | None = None,
        claim_lease_s: float = CLAIM_LEASE_S,
    ) -> None:
        self.settings = settings
        self.announcer = announcer
        self.book = book
        self.synthesize = synthesize
        self.configured = list(configured)
        self._synced = False
        self.clock = clock
        self.poll_s = poll_s
        self.lead_s = lead_s
        self.claims: FireClaims = claims or LocalClaims()
        self.claim_lease_s = claim_lease_s
        self._entries: dict[str, _Entry] = {}
        self._revision: int | None = None
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- front end -----------------------------------------------------------------------------

    @property
    def zone(self) -> tzinfo:
        return self.settings.zone()

    @property
    def presynthesizing(self) -> bool:
        return self.synthesize is not None and self.settings.cache.enabled

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    async def start(self) -> None:
        await self._sync_config()
        now = self.now()
        for schedule in self.configured:
            if schedule.at is not None and schedule.at <= now:
                log.warning(
                    "schedule %s: at %s is in the past: it will not fire",
                    schedule.name,
                    schedule.at.isoformat(),
                )
        await self._reload(force=True)
        for entry in self._entries.values():
            missing = target_kinds(entry.stored.schedule) - set(self.announcer.sinks)
            if missing and entry.stored.schedule.enabled:
                log.warning(
                    "schedule %s: no sink for its %s targets: its alerts will fail",
                    entry.stored.name,
                    " and ".join(sorted(missing)),
                )
        if self.synthesize is not None and not self.settings.cache.enabled:
            log.info("schedules: cache.enabled is false: alerts are synthesized when they fire")
        log.info("schedules: %d loaded", len(self._entries))

    async def serve(self) -> None:
        while True:
            self._wake.clear()
            if not self._synced:
                await self._sync_config()
            await self._reload()
            now = self.now()
            self._tick(now)
            await self._nap(self._sleep_s(now))

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.book.close()

    def ready(self) -> tuple[bool, str]:
        upcoming = [(e.due, e.stored.name) for e in self._entries.values() if e.due is not None]
        if not upcoming:
            return True, f"{len(self._entries)} schedule(s), none to fire"
        due, name = min(upcoming)
        return True, f"{len(self._entries)} schedule(s); next: {name} at {due.isoformat()}"

    async def idle(self) -> bool:
        """No schedule configured and none added (CLI, API, Discord): alone, the scheduler
        gives ``oyez run`` nothing to do."""
        return not self.configured and not await self.book.count(besides_config=True)

    async def _sync_config(self) -> None:
        """Sync the configured schedules into the book, once; a file locked past the busy
        timeout (another process writing) is tried again at the next poll, not fatal."""
        try:
            changes = await self.book.sync_config(self.configured, self.now())
        except sqlite3.OperationalError as exc:
            if not is_lock_timeout(exc):
                raise
            log.warning(
                "schedules: %s is locked (%s): the configured schedules are synced once it is free",
                self.book.path,
                exc,
            )
            return
        self._synced = True
        for change in changes:
            log.info("schedules: from the configuration: %s", change)

    def wake(self) -> None:
        """Reload the schedules now (a change made through this process)."""
        self._wake.set()

    # -- the loop ------------------------------------------------------------------------------

    async def _reload(self, *, force: bool = False) -> None:
        try:
            revision = await self.book.revision()
            if revision == self._revision and not force:
                return
            rows = await self.book.all()
        except sqlite3.Error as exc:  # e.g. locked past the busy timeout: keep what we have
            log.warning("schedules: cannot read %s: %s", self.book.path, exc)
            return
        self._revision = revision
        entries: dict[str, _Entry] = {}
        for stored in rows:
            old = self._entries.pop(stored.name, None)
            if old is not None and (old.stored.schedule, old.stored.since) == (
                stored.schedule,
                stored.since,
            ):
                entries[stored.name] = old  # unchanged; the loop's last_fired is the newest
                continue
            if old is not None and old.synthesis is not None:
                old.synthesis.cancel()
            entries[stored.name] = _Entry(stored, stored.next_fire(self.zone))
            log.info("schedule %s: loaded; next %s", stored.name, entries[stored.name].due)
        for gone in self._entries.values():
            if gone.synthesis is not None:
                gone.synthesis.cancel()
        self._entries = entries

    def _tick(self, now: datetime) -> None:
        lead = timedelta(seconds=self.lead_s)
        for entry in self._entries.values():
            if entry.due is None:
                continue
            if entry.due <= now:
                self._fire(entry, now)
            if (
                entry.due is not None
                and self.presynthesizing
                and entry.prepared != entry.due
                and entry.due - lead <= now
            ):
                self._prepare(entry, entry.due)

    def _sleep_s(self, now: datetime) -> float:
        wake = self.poll_s
        lead = timedelta(seconds=self.lead_s)
        for entry in self._entries.values():
            if entry.due is None:
                continue
            when = entry.due
            if self.presynthesizing and entry.prepared != entry.due:
                when -= lead  # the same arithmetic as _tick's, so 0 means it is due there
            wake = min(wake, (when - now).total_seconds())
        return max(wake, 0.0)

    async def _nap(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    def _spawn(self, coroutine: Awaitable[None], name: str) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coroutine)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- firing --------------------------------------------------------------------------------

    def _fire(self, entry: _Entry, now: datetime) -> None:
        """Handle the fire times of ``entry`` that have come: the latest is spoken (on time,
        or caught up) or skipped; earlier ones, missed while Oyez was down, are skipped."""
        stored = entry.stored
        schedule = stored.schedule
        latest, count = schedule.latest_fire(stored.anchor, now, self.zone)
        if latest is None:  # cannot be, as due came from the same anchor; never spin on it
            log.error("schedule %s: no fire time in (%s, %s]", stored.name, stored.anchor, now)
            entry.due = None
            return
        late_s = (now - latest).total_seconds()
        if late_s <= schedule.grace_s:
            outcome = Outcome.SPOKEN
        elif schedule.catch_up:
            outcome = Outcome.CAUGHT_UP
        else:
            outcome = Outcome.MISSED
        earlier = "many" if count is None else str(count - 1)
        if earlier != "0":
            log.warning(
                "schedule %s: %s earlier alert(s) were missed while Oyez was not running: skipped",
                stored.name,
                earlier,
            )
        if outcome is Outcome.MISSED:
            log.warning(
                "schedule %s: the alert of %s was missed by %.0f s (more than grace_s %g): "
                "skipped, not spoken late (catch_up is off)",
                stored.name,
                latest.isoformat(),
                late_s,
                schedule.grace_s,
            )
        elif outcome is Outcome.CAUGHT_UP:
            log.warning(
                "schedule %s: the alert of %s was missed by %.0f s: spoken now (catch_up)",
                stored.name,
                latest.isoformat(),
                late_s,
            )
        synthesis = entry.synthesis if entry.prepared == latest else None
        entry.stored = dataclasses.replace(stored, last_fired=latest, last_outcome=outcome)
        entry.due = entry.stored.next_fire(self.zone)
        self._spawn(
            self._announce(stored, latest, outcome, now, synthesis),
            f"oyez-schedule-{stored.name}",
        )

    async def _announce(
        self,
        stored: StoredSchedule,
        moment: datetime,
        outcome: Outcome,
        now: datetime,
        synthesis: asyncio.Task[None] | None,
    ) -> None:
        if outcome is Outcome.MISSED:
            await self.book.record(stored, moment, outcome)
            return
        announcement = stored.schedule.announcement(moment, self.zone)
        firing = firing_id(stored.name, moment)
        missing = target_kinds(stored.schedule) - set(self.announcer.sinks)
        if missing and self.claims.shared:  # another process, with those sinks, speaks it
            log.info("schedule %s: %s left to a process with a %s sink", stored.name, firing,
                     " and ".join(sorted(missing)))  # fmt: skip
            return
        if not await self._won(firing, stored.schedule, moment):
            log.info("schedule %s: %s is spoken by another process", stored.name, firing)
            return
        keeping = self._spawn(self._keep_claim(firing), f"oyez-claim-{stored.name}")
        try:
            if synthesis is not None and not synthesis.done():
                await asyncio.wait([synthesis])  # its audio, rather than a second synthesis
            created = moment if outcome is Outcome.SPOKEN else now  # the ttl counts from it
            status = await self.announcer.submit(
                announcement, RequestSource.SCHEDULE, created_at=created
            )
            await self.book.record(stored, moment, outcome)
            await status.done.wait()
        finally:
            keeping.cancel()
        await self._claims_call(self.claims.done(firing), firing)
        log.info("schedule %s: %s (%s)", stored.name, status.state.value, status.id)

    async def _won(self, firing: str, schedule: Schedule, moment: datetime) -> bool:
        """Whether this process speaks ``firing``: it claimed it, or took over the claim of
        one that died before delivering it while the firing may still be spoken (within
        ``grace_s``, or later with ``catch_up``). When the claims cannot be reached it speaks
        (a doubled alert rather than a lost one)."""
        while True:
            try:
                found = await self.claims.claim(firing, self.claim_lease_s)
            except Exception as exc:
                log.warning("%s: cannot claim it (%s): speaking it here", firing, exc)
                return True
            if found is not Claim.HELD:
                return found is Claim.WON
            late_s = (self.now() - moment).total_seconds()
            if late_s > schedule.grace_s and not schedule.catch_up:
                return False
            await asyncio.sleep(self.claim_lease_s / 3)  # its holder may yet die

    async def _keep_claim(self, firing: str) -> None:
        """Renew this process's claim on ``firing`` until cancelled (once delivered)."""
        while True:
            await asyncio.sleep(self.claim_lease_s / 3)
            if not await self._claims_call(self.claims.renew(firing, self.claim_lease_s), firing):
                log.warning("%s: its claim was lost: another process may speak it too", firing)
                return

    async def _claims_call(self, call: Awaitable[bool | None], firing: str) -> bool:
        """``call``'s answer; False (logged) when the claims cannot be reached."""
        try:
            return await call is not False
        except Exception as exc:
            log.warning("%s: the fire claims cannot be reached: %s", firing, exc)
            return False

    # -- synthesis ahead -----------------------------------------------------------------------

    def _prepare(self, entry: _Entry, moment: datetime) -> None:
        entry.prepared = moment
        schedule = entry.stored.schedule
        sinks = [
            self.announcer.sinks[k] for k in target_kinds(schedule) if k in self.announcer.sinks
        ]
        if not sinks:
            return
        announcement = schedule.announcement(moment, self.zone)
        entry.synthesis = self._spawn(
            self._synthesize(announcement, sinks), f"oyez-schedule-prepare-{schedule.name}"
        )

    async def _synthesize(self, announcement: Announcement, sinks: list[Sink]) -> None:
        """Make the alert's audio for each sink, the way it will ask for it: through its
        ``warm`` when it has one (:class:`WarmSink`), else whole, in its profile."""

        async def one(sink: Sink) -> None:
            assert self.synthesize is not None
            request = SpeechRequest.build(
                id=f"{announcement.id}:ahead:{sink.kind}",
                text=announcement.message,
                voice=announcement.voice,
                provider=announcement.provider,
                priority=announcement.priority,
                output=sink.profile,
                source=RequestSource.SCHEDULE,
            )
            try:
                if isinstance(sink, WarmSink):
                    await sink.warm(
                        request, self.announcer.targets(announcement).get(sink.kind, [])
                    )
                else:
                    await self.synthesize(request)
            except Exception as exc:  # the alert is still tried when it fires
                log.warning("%s: synthesis ahead (%s) failed: %s", announcement.id, sink.kind, exc)

        await asyncio.gather(*(one(sink) for sink in sinks))


def configured_schedules(settings: Settings) -> list[Schedule]:
    """The ``schedules:`` of the configuration, validated. Raises :class:`ConfigError` naming
    each wrong key, and repeated names."""
    schedules: list[Schedule] = []
    seen: set[str] = set()
    for index, data in enumerate(settings.schedules):
        try:
            schedule = Schedule.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, f"schedules[{index}]")) from None
        try:
            check_targets(schedule, settings)
        except InvalidRequest as exc:
            raise ConfigError(f"schedules[{index}] ({schedule.name}): {exc}") from None
        if schedule.name.casefold() in seen:
            raise ConfigError(f"schedules[{index}]: the name {schedule.name!r} is used twice")
        seen.add(schedule.name.casefold())
        schedules.append(schedule)
    return schedules
