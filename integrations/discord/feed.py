"""Playing speech that is still being made (sentence after sentence, or a provider's stream)
as one continuous Opus stream: no gap between sentences, no restart of the voice sender.

:class:`Production` makes an item's segments ahead of playback (the first once it is queued,
the others when playback asks); :func:`fill` puts their Opus packets into an :class:`OpusFeed`
in order, at most :data:`FEED_AHEAD_S` ahead; the voice sender thread takes a packet every
20 ms (:class:`integrations.discord.audio.OpusFeedSource`) and sends silence for a late one.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable

from bot.audio.live import FRAME_S, LiveUtterance
from bot.audio.ogg import opus_packets
from bot.speech import SpeechRequest, Utterance
from bot.synthesis.prepared import PreparedRequest, Segment

__all__ = ["FEED_AHEAD_S", "OpusFeed", "Production", "Segments", "fill"]

#: Seconds of audio the feed may hold before the next sentence is taken: it bounds how far
#: synthesis runs ahead of playback (with the pipeline's lookahead of sentences in flight).
FEED_AHEAD_S = 1.0

Segments = Callable[[SpeechRequest | PreparedRequest], AsyncIterator[Segment]]


class OpusFeed:
    """Opus packets (20 ms each) handed from the event loop to the voice sender thread.

    The event loop :meth:`put` s packets and :meth:`close` s the feed after the last; the
    sender thread :meth:`get` s them. ``fed_s`` is the audio put so far and ``queued_s`` what
    waits (seconds); ``reads`` counts the sender's calls (its progress), ``underruns`` the calls
    that found no packet in time. Thread-safe.
    """

    def __init__(self) -> None:
        self._packets: deque[bytes] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self.fed = 0
        self.reads = 0
        self.underruns = 0

    @property
    def fed_s(self) -> float:
        return self.fed * FRAME_S

    @property
    def queued_s(self) -> float:
        return len(self._packets) * FRAME_S

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, packet: bytes) -> None:
        with self._ready:
            self._packets.append(packet)
            self.fed += 1
            self._ready.notify()

    def close(self) -> None:
        """No more packets: the sender ends once it has taken those left."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def get(self, timeout_s: float) -> bytes | None:
        """The next packet, waiting at most ``timeout_s`` seconds; ``b""`` when the feed is
        closed and empty; None when no packet came in time (an underrun)."""
        with self._ready:
            self.reads += 1
            if not self._packets and not self._closed:
                self._ready.wait(timeout_s)
            if self._packets:
                return self._packets.popleft()
            if self._closed:
                return b""
            self.underruns += 1
            return None


class Production:
    """An item's segments, made ahead: the first is started at once, the next ones on demand.

    :meth:`next` returns the segments in order (None after the last) and raises a sentence's
    synthesis error; :meth:`aclose` cancels what is under way.
    """

    def __init__(self, segments: AsyncIterator[Segment]) -> None:
        self._segments = segments
        self._first: asyncio.Task[Segment | None] | None = asyncio.create_task(
            self._take(), name="oyez-prefetch"
        )
        self._closing: asyncio.Task[None] | None = None

    async def _take(self) -> Segment | None:
        with contextlib.suppress(StopAsyncIteration):
            return await anext(self._segments)
        return None

    async def next(self) -> Segment | None:
        first, self._first = self._first, None
        if first is not None:
            return await first
        return await self._take()

    async def aclose(self) -> None:
        first, self._first = self._first, None
        if first is not None:
            first.cancel()
            (segment,) = await asyncio.gather(first, return_exceptions=True)
            if isinstance(segment, Segment) and isinstance(segment.speech, LiveUtterance):
                segment.speech.cancel()
        aclose = getattr(self._segments, "aclose", None)
        if aclose is not None:
            await aclose()

    def cancel(self) -> None:
        """:meth:`aclose` in the background (for callers that cannot wait)."""
        if self._closing is None:
            self._closing = asyncio.create_task(self.aclose(), name="oyez-cancel-production")


async def fill(
    feed: OpusFeed,
    first: Segment,
    production: Production,
    parts: list[Utterance],
    *,
    start_s: float,
    ready: asyncio.Event,
) -> None:
    """Put the packets of ``first`` and of every following segment into ``feed``, in order,
    then close it; each complete utterance goes to ``parts``.

    ``ready`` is set once ``start_s`` seconds of audio are in (playback may start). Raises a
    segment's synthesis error (the feed is closed: what came before it still plays).
    """
    ahead_s = max(FEED_AHEAD_S, start_s)
    segment: Segment | None = first
    try:
        while segment is not None:
            speech = segment.speech
            if isinstance(speech, LiveUtterance):
                try:
                    async for packet in speech.packets():
                        feed.put(packet)
                        if feed.fed_s >= start_s:
                            ready.set()
                    parts.append(await speech.result())
                finally:
                    speech.cancel()  # a no-op once done; stops it when playback was cut
            else:
                for packet in opus_packets(speech.audio):
                    feed.put(packet)
                parts.append(speech)
            if feed.fed_s >= start_s:
                ready.set()
            while feed.queued_s > ahead_s:  # noqa: ASYNC110 - the sender is a thread
                await asyncio.sleep(FRAME_S * 5)
            segment = await production.next()
    finally:
        feed.close()
        ready.set()
