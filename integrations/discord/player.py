"""One speech queue per guild: in order (priority, then arrival), one utterance at a time, the
next ones made while the current one plays.

The player drives a :class:`VoiceOutput` (discord.py's ``VoiceClient`` through
:mod:`integrations.discord.audio`) and asks ``segments`` (:meth:`SpeechPipeline.speak_sentences`)
for audio: sentences and streams play as one Opus stream (:mod:`integrations.discord.feed`), a
text of one sentence made whole as one Ogg file. Up to ``prefetch`` items are started ahead; an
item that expired while it waited is dropped, never played late.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from bot.audio.live import LiveUtterance
from bot.errors import OyezError, RequestExpired
from bot.ops.metrics import QUEUE_DEPTH, TIME_TO_FIRST_AUDIO
from bot.speech import SpeechRequest, Utterance
from bot.synthesis.prepared import PreparedRequest, Segment, join_utterances
from integrations.discord.feed import OpusFeed, Production, Segments, fill

__all__ = ["GuildPlayer", "QueuedItem", "Report", "Skipped", "VoiceOutput"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: Extra seconds a play may take beyond the utterance's duration before it is cut (a stuck
#: voice connection must not block the queue).
PLAY_MARGIN_S = 5.0
#: Seconds an item waits for a dropped voice connection to come back (discord.py reconnects it
#: on its own) before it is given up, reported as not played.
RECONNECT_WAIT_S = 20.0


class Skipped(Exception):
    """An item cut (``/skip``, ``/stop``, the player closing) before any of it was said: its
    report's error. Not a failure: nothing is wrong with the voice or the provider."""


#: why each way of cutting an item cut it, as its report says
SKIPPED = "skipped before it was said"
STOPPED = "dropped by /stop"
CLOSED = "dropped: Oyez left the voice channel"


class VoiceOutput(Protocol):
    """What the player needs of a voice connection."""

    def play_opus(self, ogg_opus: bytes, done: Callable[[Exception | None], None]) -> None:
        """Start playing Ogg Opus audio; call ``done`` (from any thread) when it ends."""

    def play_feed(self, feed: OpusFeed, done: Callable[[Exception | None], None]) -> None:
        """Start playing the Opus packets of ``feed`` as they come, until it is closed and
        empty; call ``done`` (from any thread) when it ends."""

    def stop(self) -> None:
        """Stop what is playing now (``done`` is then called)."""

    def is_connected(self) -> bool: ...


@dataclass(order=True)
class QueuedItem:
    """A request waiting in a guild's queue. ``label`` says who asked, for ``/queue``."""

    rank: int
    seq: tuple[float, int]  # (arrival, Unix ms; a tie-breaker)
    request: SpeechRequest = field(compare=False)
    label: str = field(compare=False, default="")
    #: the request as the front end already prepared it, so it is not prepared again
    prepared: PreparedRequest | None = field(compare=False, default=None, repr=False)
    production: Production | None = field(compare=False, default=None, repr=False)
    reported: bool = field(compare=False, default=False, repr=False)  # on_done has it


Report = Callable[[QueuedItem, Utterance | None, BaseException | None], Awaitable[None]]


class GuildPlayer:
    """The queue and player of one guild. Create it inside the running event loop.

    ``on_done(item, utterance, error)`` gets each item's outcome once it has played (or not);
    after ``idle_timeout_s`` seconds with nothing to play, ``on_idle`` is called.
    """

    def __init__(  # noqa: PLR0913 - keyword-only tunables and callbacks
        self,
        output: VoiceOutput,
        segments: Segments,
        *,
        prefetch: int = 2,
        idle_timeout_s: float = 300.0,
        on_idle: Callable[[], Awaitable[None]] | None = None,
        on_done: Report | None = None,
        start_s: float = 0.2,
    ) -> None:
        self.segments = segments
        self.start_s = start_s
        self.output = output
        self.prefetch = max(prefetch, 0)
        self.idle_timeout_s = idle_timeout_s
        self.on_idle = on_idle
        self.on_done = on_done
        self._queue: list[QueuedItem] = []
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()
        self._current: QueuedItem | None = None
        #: set when the current item has ended or is cut; ``_cut`` says why it was cut
        self._finished: asyncio.Event | None = None
        self._cut = SKIPPED
        self._reports: set[asyncio.Task[None]] = set()  # of items dropped from the queue
        self._task = asyncio.create_task(self._run(), name="oyez-guild-player")
        _players.add(self)

    # -- what commands call --------------------------------------------------------------------

    def enqueue(
        self,
        request: SpeechRequest | PreparedRequest,
        label: str = "",
        arrived: tuple[float, int] | None = None,
    ) -> int:
        """Queue ``request`` (prepared or not); returns how many items play before it (0: it
        plays next).

        ``arrived`` orders equals: when the request arrived (Unix ms) and a tie-breaker; by
        default, now. A front end that knows when a request was made (a Discord interaction's
        snowflake) keeps that order even when requests take different times to get here.
        """
        order = arrived if arrived is not None else (time.time() * 1000, next(self._seq))
        prepared = request if isinstance(request, PreparedRequest) else None
        plain = request.request if isinstance(request, PreparedRequest) else request
        item = QueuedItem(-plain.priority.rank, order, plain, label, prepared)
        self._queue.append(item)
        self._queue.sort()
        self._prefetch()
        self._wakeup.set()
        return self._queue.index(item) + (1 if self._current is not None else 0)

    def pending(self) -> list[QueuedItem]:
        """What is playing (first) and what waits, in play order."""
        return ([self._current] if self._current else []) + list(self._queue)

    def skip(self, why: str = SKIPPED) -> bool:
        """Cut the current item: what plays stops; one still being made is not played
        (reported :class:`Skipped` with ``why``). Returns False when nothing was playing."""
        if self._current is None:
            return False
        if self._finished is not None and not self._finished.is_set():
            self._cut = why
            self._finished.set()
        self.output.stop()
        return True

    def stop(self, why: str = STOPPED) -> int:
        """Empty the queue and cut the current item; returns how many items were dropped.
        Each is reported :class:`Skipped` with ``why`` (its ``/say`` reply says so)."""
        dropped = list(self._queue)
        self._queue.clear()
        for item in dropped:
            if item.production is not None:
                item.production.cancel()
            self._report_soon(item, Skipped(why))
        self.skip(why)
        return len(dropped)

    def _report_soon(self, item: QueuedItem, error: BaseException) -> None:
        report = asyncio.create_task(self._report(item, None, error))
        self._reports.add(report)
        report.add_done_callback(self._reports.discard)

    async def close(self) -> None:
        """Stop and end the player. Safe from its own callbacks (``on_idle`` may close it)."""
        self.stop(CLOSED)
        self._task.cancel()
        if asyncio.current_task() is self._task:
            return  # called from on_idle/on_done: the cancellation ends the task after this
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self._reports:
            await asyncio.wait(self._reports)

    # -- inside --------------------------------------------------------------------------------

    def _prefetch(self) -> None:
        # `prefetch` items are made ahead of the one playing (the head too, when none plays)
        ahead = self.prefetch + (0 if self._current is not None else 1)
        for item in self._queue[:ahead]:
            self._start(item)

    def _start(self, item: QueuedItem) -> Production:
        """Start making ``item``'s audio (its first sentence) unless it is under way."""
        if item.production is None:
            item.production = Production(self.segments(item.prepared or item.request))
        return item.production

    async def _next(self) -> QueuedItem | None:
        """The next item, or None after ``idle_timeout_s`` with nothing to play."""
        while not self._queue:
            self._wakeup.clear()
            try:
                async with asyncio.timeout(self.idle_timeout_s):
                    await self._wakeup.wait()
            except TimeoutError:
                return None
        return self._queue.pop(0)

    async def _run(self) -> None:
        while True:
            item = await self._next()
            if item is None:
                if self.on_idle is not None:
                    await self.on_idle()
                await self._wait_for_work()
                continue
            self._current, self._finished = item, asyncio.Event()
            self._prefetch()
            try:
                await self._play(item, self._finished)
            except asyncio.CancelledError:  # the player is closing: the item is not said
                if not item.reported:
                    self._report_soon(item, Skipped(self._cut))
                raise
            finally:
                self._current = self._finished = None
                self._prefetch()

    async def _wait_for_work(self) -> None:
        self._wakeup.clear()
        await self._wakeup.wait()

    async def _unless_cut(self, step: Awaitable[_T], finished: asyncio.Event) -> _T:
        """``step``'s result, or :class:`Skipped` as soon as the current item is cut before
        ``step`` is done (a synthesis waiting out a rate limit must not hold up ``/skip``)."""
        task = asyncio.ensure_future(step)
        cut = asyncio.create_task(finished.wait())
        try:
            await asyncio.wait([task, cut], return_when=asyncio.FIRST_COMPLETED)
        finally:
            cut.cancel()
            if not task.done():
                task.cancel()
                await asyncio.wait([task])
        if task.cancelled() and finished.is_set():
            raise Skipped(self._cut)
        return task.result()

    async def _play(self, item: QueuedItem, finished: asyncio.Event) -> None:
        production = self._start(item)
        first: Segment | None = None
        try:
            first = await self._unless_cut(production.next(), finished)
            assert first is not None  # a text has at least one sentence
            speech: Utterance | Segment = first
            if first.count == 1 and isinstance(first.speech, Utterance):
                speech = first.speech  # one sentence, made whole: played as one file
            overdue = item.request.overdue_s()
            if overdue > 0:
                raise RequestExpired(item.request.id, overdue, "while it waited in the queue")
            if finished.is_set():
                raise Skipped(self._cut)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the player itself is closing
            await production.aclose()
            await self._report(item, None, Skipped("its synthesis was cancelled"))
            return
        except (OyezError, Exception) as exc:  # reported, and the queue goes on
            if not isinstance(exc, Skipped):
                log.warning("request %s: not played: %s", item.request.id, exc)
            if first is not None and isinstance(first.speech, LiveUtterance):
                first.speech.cancel()  # a stream it began is not read
            await production.aclose()
            await self._report(item, None, exc)
            return
        try:
            if isinstance(speech, Segment):
                await self._play_feed(item, speech, production, finished)
            else:
                await self._play_utterance(item, speech, finished)
        finally:
            await production.aclose()

    async def _play_utterance(
        self, item: QueuedItem, utterance: Utterance, finished: asyncio.Event
    ) -> None:
        loop = asyncio.get_running_loop()
        failure: list[Exception] = []

        def done(error: Exception | None) -> None:  # called from discord.py's player thread
            if error is not None:
                failure.append(error)
            loop.call_soon_threadsafe(finished.set)

        try:
            await self._unless_cut(self._reconnected(), finished)
            self.output.play_opus(utterance.audio, done)
            _first_audio(item)
        except Exception as exc:  # e.g. "Not connected to voice": reported, the queue goes on
            if not isinstance(exc, Skipped):
                log.warning("request %s: not played: %s", item.request.id, exc)
            await self._report(item, None, exc)
            return
        try:
            async with asyncio.timeout(utterance.duration_s + PLAY_MARGIN_S):
                await finished.wait()
        except TimeoutError:
            log.warning("request %s: playback stuck; cut", item.request.id)
            self.output.stop()
        await self._report(item, utterance, failure[0] if failure else None)

    async def _play_feed(
        self, item: QueuedItem, first: Segment, production: Production, finished: asyncio.Event
    ) -> None:
        """Play ``item`` segment by segment as one Opus stream, starting once ``start_s``
        seconds of it are encoded; report it once, as one utterance, when it has played."""
        loop = asyncio.get_running_loop()
        feed, ready = OpusFeed(), asyncio.Event()
        parts: list[Utterance] = []
        filling = asyncio.create_task(
            fill(feed, first, production, parts, start_s=self.start_s, ready=ready),
            name="oyez-feed",
        )
        failure: list[BaseException] = []

        def done(error: Exception | None) -> None:  # called from discord.py's player thread
            if error is not None:
                failure.append(error)
            loop.call_soon_threadsafe(finished.set)

        try:
            await self._unless_cut(ready.wait(), finished)
            if first.lead_s and first.next_made is not None and not filling.done():
                # so that the next sentence is made before this one has been said
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(first.lead_s):
                        await first.next_made.wait()
            if feed.fed == 0:  # failed before any audio
                await asyncio.wait([filling])
                error = filling.exception() if not filling.cancelled() else None
                raise error or RuntimeError("no audio")
            if finished.is_set():
                raise Skipped(self._cut)
            await self._unless_cut(self._reconnected(), finished)
            self.output.play_feed(feed, done)
            _first_audio(item)
            await self._watch(item, feed, finished)
            if feed.underruns:  # heard as gaps: a sentence was not made in time
                log.info(
                    "request %s: %d late frames sent as silence", item.request.id, feed.underruns
                )
        except Exception as exc:  # not played: reported, and the queue goes on
            if not isinstance(exc, Skipped):
                log.warning("request %s: not played: %s", item.request.id, exc)
            failure.append(exc)
            parts.clear()
        finally:
            filling.cancel()
            await asyncio.wait([filling])
            await production.aclose()  # before the report: nothing of it is left running
        broken = None if filling.cancelled() else filling.exception()
        if broken is not None and not failure:
            failure.append(broken)  # a sentence failed: those before it were said
        summary = join_utterances(item.request, parts) if parts else None
        await self._report(item, summary, failure[0] if failure else None)

    async def _watch(self, item: QueuedItem, feed: OpusFeed, finished: asyncio.Event) -> None:
        """Wait for the end of a feed's playback; cut it when the sender stops taking packets
        for ``PLAY_MARGIN_S`` (a stuck voice connection must not block the queue)."""
        progress, since = feed.reads, asyncio.get_running_loop().time()
        while not finished.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await finished.wait()
            now = asyncio.get_running_loop().time()
            if feed.reads != progress:
                progress, since = feed.reads, now
            elif now - since > PLAY_MARGIN_S:
                log.warning("request %s: playback stuck; cut", item.request.id)
                self.output.stop()
                return

    async def _reconnected(self) -> None:
        # polled: discord.py offers no public awaitable for a reconnect
        for _ in range(int(RECONNECT_WAIT_S / 0.1)):
            if self.output.is_connected():
                return
            await asyncio.sleep(0.1)

    async def _report(
        self, item: QueuedItem, utterance: Utterance | None, error: BaseException | None
    ) -> None:
        item.reported = True
        if self.on_done is not None:
            try:
                await self.on_done(item, utterance, error)
            except Exception:
                log.exception("reporting request %s failed", item.request.id)


#: Every live player, for the queue-depth gauge.
_players: weakref.WeakSet[GuildPlayer] = weakref.WeakSet()
QUEUE_DEPTH.set_function(lambda: float(sum(len(p._queue) for p in list(_players))))


def _first_audio(item: QueuedItem) -> None:
    """Time to first audio: from the request's creation to its audio starting to play."""
    waited = (datetime.now(UTC) - item.request.created_at).total_seconds()
    TIME_TO_FIRST_AUDIO.labels(sink="discord").observe(max(waited, 0.0))
