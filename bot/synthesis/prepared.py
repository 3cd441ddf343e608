"""What the speech pipeline hands on: a :class:`PreparedRequest` (checked, nothing spent yet),
a :class:`Segment` per sentence, and :func:`join_utterances` for the sentences said as one.

Kept apart from :mod:`bot.synthesis.pipeline` so that sinks (the Discord player and feed) use
these shapes without importing the pipeline itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.audio.live import LiveUtterance
from bot.providers.base import Provider, SynthesisJob
from bot.speech import SpeechRequest, Timings, Utterance, Voice

__all__ = ["PreparedRequest", "Segment", "join_utterances"]


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """A request that passed every check: what will be said, by whom, how."""

    request: SpeechRequest
    text: str
    provider: Provider
    voice: Voice
    options: dict[str, Any]

    def job(self) -> SynthesisJob:
        return SynthesisJob(self.request.id, self.text, self.voice, self.options)


@dataclass(frozen=True, slots=True)
class Segment:
    """The ``index``-th (from 0) of ``count`` sentences, its speech complete or still arriving.

    First segment only: ``lead_s`` (seconds) is how long to hold playback back so the next
    sentence is likely made before this one is said (from the voice's last synthesis speed per
    character, on the safe side; 0 when this one is long enough); ``next_made`` is set once the
    next sentence is made: holding back longer is pointless.
    """

    index: int
    count: int
    speech: Utterance | LiveUtterance
    lead_s: float = 0.0
    next_made: asyncio.Event | None = None


def join_utterances(request: SpeechRequest, parts: Sequence[Utterance]) -> Utterance:
    """One utterance for the sentences of ``request`` said one after another (a reply).

    ``audio`` is the parts' Ogg files chained (RFC 7845 §3 allows it); durations, synthesis
    times and costs are summed; the voice is the first part's; the fallbacks are every part's
    without repeats; ``cached`` only when every part came from the cache. ``parts`` must not be
    empty.
    """
    first = parts[0]
    if len(parts) == 1:
        return first
    costs = [p.cost_usd for p in parts if p.cost_usd is not None]
    notes = tuple(dict.fromkeys(n for p in parts for n in p.fallbacks))
    return Utterance(
        request_id=request.id,
        text=" ".join(p.text for p in parts),
        audio=b"".join(p.audio for p in parts),
        profile=first.profile,
        sample_rate=first.sample_rate,
        channels=first.channels,
        duration_s=sum(p.duration_s for p in parts),
        voice=first.voice,
        timings=Timings(
            synthesis_s=sum(p.timings.synthesis_s for p in parts),
            transcode_s=sum(p.timings.transcode_s for p in parts),
            total_s=sum(p.timings.total_s for p in parts),
            first_audio_s=first.timings.first_audio_s,
        ),
        loudness_lufs=None,
        fallbacks=notes,
        cost_usd=sum(costs) if costs else None,
        cached=all(p.cached for p in parts),
    )
