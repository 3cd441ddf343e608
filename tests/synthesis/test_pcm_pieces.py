"""A ``wav`` request to a provider that streams PCM pieces (Piper split at its vocoder): once the
voice's first sentence has taught the gain its pieces need, the next come as a live stream,
normalised as they arrive; the whole is cached; one sentence's provider call at a time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar

import pytest

from bot.audio.live import LiveUtterance
from bot.audio.transcode import wav_pcm
from bot.ops import config
from bot.providers.base import ProviderRegistry, SynthesisJob, Synthesized
from bot.speech import AudioChunk, OutputProfile, SpeechRequest, Utterance
from bot.synthesis.pipeline import SpeechPipeline
from integrations import PROVIDERS
from tests.support.probe import integrated_loudness
from tests.support.tone_provider import ToneProvider


class PiecesTone(ToneProvider):
    """The tone, in three pieces 50 ms apart when asked for pieces, as Piper split at its
    vocoder sends a sentence; counts how many of its calls run at once."""

    kind = "piecestone"
    asked: ClassVar[list[SynthesisJob]] = []
    running: ClassVar[int] = 0
    most: ClassVar[int] = 0

    def streams_pcm(self, job: SynthesisJob) -> bool:  # noqa: ARG002 - a Provider hook
        return True

    async def stream(self, job: SynthesisJob) -> AsyncIterator[Synthesized]:
        cls = type(self)
        cls.asked.append(job)
        cls.running += 1
        cls.most = max(cls.most, cls.running)
        try:
            whole = (await self.synthesize(job)).chunk
            if not job.pcm_pieces:
                await asyncio.sleep(0.15)
                yield Synthesized(whole)
                return
            step = len(whole.data) // 3 // 2 * 2
            for at in range(0, len(whole.data), step):
                await asyncio.sleep(0.05)
                piece = whole.data[at : at + step]
                yield Synthesized(AudioChunk(piece, whole.encoding, whole.sample_rate, 1))
        finally:
            cls.running -= 1


@pytest.fixture
async def pipeline(tmp_path: Path) -> AsyncIterator[SpeechPipeline]:
    ToneProvider.calls.clear()
    PiecesTone.asked.clear()
    PiecesTone.running = PiecesTone.most = 0
    settings = config.load(data_dir=tmp_path / "data", cache={"enabled": True})
    targets = {**PROVIDERS, "piecestone": "tests.synthesis.test_pcm_pieces:PiecesTone"}
    speech = SpeechPipeline(settings, ProviderRegistry(settings, targets))
    yield speech
    await speech.aclose()


def wav(text: str) -> SpeechRequest:
    return SpeechRequest(text=text, provider="piecestone", output=OutputProfile.WAV)


async def test_pieces_play_as_they_come_once_the_first_sentence_taught_their_gain(
    pipeline: SpeechPipeline,
) -> None:
    first = await pipeline.speak_live(wav("One two three four."))
    assert isinstance(first, Utterance)  # no gain known for the pieces yet: made whole
    assert PiecesTone.asked[-1].pcm_pieces  # ...from pieces, so it teaches their gain
    second = await pipeline.speak_live(wav("Five six seven eight nine."))
    assert isinstance(second, LiveUtterance)
    pieces = [piece async for piece in second.packets()]
    assert len(pieces) >= 3  # each as it came
    spoken = await second.result()
    assert second.sample_rate == 16_000
    assert wav_pcm(spoken.audio) == (16_000, b"".join(pieces))  # kept is what went out
    target = pipeline.settings.audio.loudness_target_lufs
    assert abs(integrated_loudness(spoken.audio) - target) <= 1.0
    again = await pipeline.speak_live(wav("Five six seven eight nine."))
    assert isinstance(again, Utterance) and again.cached
    assert again.audio == spoken.audio


async def test_a_plain_request_teaches_the_pieces_gain_then_is_made_whole(
    pipeline: SpeechPipeline,
) -> None:
    spoken = await pipeline.speak(wav("Ten eleven twelve."))
    assert PiecesTone.asked[-1].pcm_pieces  # no gain known for pieces: made from them
    target = pipeline.settings.audio.loudness_target_lufs
    assert abs(integrated_loudness(spoken.audio) - target) <= 1.0
    again = await pipeline.speak(wav("Thirteen fourteen."))
    assert not PiecesTone.asked[-1].pcm_pieces  # known now: whole costs the provider less
    assert abs(integrated_loudness(again.audio) - target) <= 1.0
    opus = SpeechRequest(text="Fifteen.", provider="piecestone", output=OutputProfile.OGG_OPUS)
    assert isinstance(await pipeline.speak_live(opus), Utterance)
    assert not PiecesTone.asked[-1].pcm_pieces


async def test_only_the_first_sentence_streams_and_the_next_waits_for_its_provider(
    pipeline: SpeechPipeline,
) -> None:
    await pipeline.speak(wav("Teach the gain."))  # the pieces' gain is known from here on
    text = "The first one streams. The second waits its turn. The third too."
    found = [s async for s in pipeline.speak_sentences(wav(text), live=True)]
    # the first streams; the rest are made (whole: cheaper) while it is heard
    assert [isinstance(s.speech, LiveUtterance) for s in found] == [True, False, False]
    assert isinstance(found[0].speech, LiveUtterance)
    await found[0].speech.result()
    assert PiecesTone.most == 1  # never two calls at once: sentence order is provider order


async def test_two_callers_of_one_new_text_make_it_once_in_sentence_order(
    pipeline: SpeechPipeline,
) -> None:
    """Two Wyoming clients (two satellites announcing one alert) ask the same new text at once:
    the second reads the first's stream and waits for its later sentences; each sentence is
    made once, one provider call at a time."""
    await pipeline.speak(wav("Teach the gain."))
    PiecesTone.asked.clear()
    text = "The alarm is on. The back door is open. The lights are off."

    async def hear() -> list[bytes]:
        heard = []
        async for segment in pipeline.speak_sentences(wav(text), live=True):
            speech = segment.speech
            if isinstance(speech, LiveUtterance):
                heard.append(b"".join([piece async for piece in speech.packets()]))
            else:
                heard.append(wav_pcm(speech.audio)[1])
        return heard

    first, second = await asyncio.gather(hear(), hear())
    assert [job.text for job in PiecesTone.asked] == [
        "The alarm is on.",
        "The back door is open.",
        "The lights are off.",
    ]
    assert PiecesTone.most == 1
    assert first == second  # the same audio, piece for piece
