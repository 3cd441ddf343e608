"""Streaming playback: provider audio encoded to Opus while it arrives (real ffmpeg), against the
simulated Together and OpenAI-compatible servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import io
import math
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from discord.oggparse import OggStream

from bot.audio.live import LiveUtterance, OpusStreamEncoder, StreamFormat
from bot.audio.ogg import OggOpusReader, opus_packets
from bot.audio.transcode import Loudness, Transcoder
from bot.errors import ProviderUnavailable
from bot.ops import config
from bot.ops.config import AudioSettings
from bot.speech import AudioChunk, AudioEncoding, OutputProfile, SpeechRequest, Utterance
from bot.synthesis.pipeline import SpeechPipeline
from bot.synthesis.prepared import join_utterances
from bot.synthesis.sentences import split_sentences
from tests.fakes import FakeOpenAISpeech
from tests.fakes.audio import encode_with_ffmpeg, wav_bytes
from tests.support.asr import Transcriber, word_error_rate
from tests.support.speech import piper_pcm
from tests.support.timing import TimedTogether

SPEECH = "/v1/audio/speech"
KEY = "test-together-key"
TEXT = "The parcel has arrived at the front door, please collect it."


def tone(seconds: float, rate: int = 24_000, amplitude: float = 0.3) -> bytes:
    count = int(seconds * rate)
    return struct.pack(
        f"<{count}h",
        *(int(amplitude * 32767 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(count)),
    )


def pcm(seconds: float, rate: int = 24_000, amplitude: float = 0.3) -> AudioChunk:
    return AudioChunk(tone(seconds, rate, amplitude), AudioEncoding.PCM_S16LE, rate, 1)


async def ogg_opus(seconds: float) -> bytes:
    encoded = await Transcoder(AudioSettings()).transcode([pcm(seconds)], OutputProfile.OGG_OPUS)
    return encoded.data


def reference_packets(ogg: bytes) -> list[bytes]:
    """discord.py's own Ogg parser, as the oracle."""
    packets = OggStream(io.BytesIO(ogg)).iter_packets()
    return [p for p in packets if p and not p.startswith((b"OpusHead", b"OpusTags"))]


# -- Ogg and the encoder -----------------------------------------------------------------------


async def test_the_ogg_reader_reads_a_file_piece_by_piece() -> None:
    ogg = await ogg_opus(1.5)
    reader = OggOpusReader()
    packets = [p for i in range(0, len(ogg), 7) for p in reader.feed(ogg[i : i + 7])]
    assert packets == reference_packets(ogg)
    assert len(packets) == 76  # 1.5 s and the encoder's 6.5 ms pre-skip, in 20 ms packets
    assert reader.duration_s == pytest.approx(1.5, abs=0.001)
    chained = OggOpusReader()
    assert chained.feed(ogg + await ogg_opus(0.5)) == packets + opus_packets(await ogg_opus(0.5))
    assert chained.duration_s == pytest.approx(2.0, abs=0.001)


async def test_the_encoder_hands_out_packets_before_the_stream_ends() -> None:
    received: list[tuple[float, bytes]] = []
    encoder = OpusStreamEncoder(
        Transcoder(AudioSettings()),
        lambda packet: received.append((time.monotonic(), packet)),
        gain_db=0.0,
    )
    first = pcm(1.0)
    await encoder.start(StreamFormat.of(first))  # ffmpeg's start is not what is timed
    fed_at = time.monotonic()
    await encoder.feed(first)
    async with asyncio.timeout(2):
        while len(received) < 40:  # noqa: ASYNC110 - polling the encoder's output
            await asyncio.sleep(0.01)
    assert received[0][0] - fed_at < 0.5  # encoded as it came, the stream still open
    await encoder.feed(pcm(0.5))
    encoded = await encoder.finish()
    assert opus_packets(encoded.data) == [p for _, p in received]  # the whole stream, kept
    assert reference_packets(encoded.data) == [p for _, p in received]
    assert encoded.duration_s == pytest.approx(1.5, abs=0.03)
    assert not encoded.loudness.is_silent


SPOKEN = "The parcel has arrived at the front door."
#: How each compressed stream a provider may send is made here (tests/fakes/audio.py), and
#: after how many of its 12 pieces (~0.25 s each) the first packet must be out: an MP3 or AAC
#: stream from its first frames (ffmpeg's probe of the input is cut to them: by default it
#: read ~0.8 s of a stream first), a WAV from its header (its samples go in as raw PCM:
#: ffmpeg's WAV demuxer reads 64 KiB ahead, after 9 pieces here); None: whole and right, not
#: when (these Ogg pages last 1 s; FLAC's demuxer reads ahead too).
COMPRESSED = {
    AudioEncoding.MP3: ("mp3", 3),
    AudioEncoding.AAC: ("aac", 3),
    AudioEncoding.WAV: ("wav", 3),
    AudioEncoding.OGG_OPUS: ("opus", None),
    AudioEncoding.FLAC: ("flac", None),
}


@pytest.mark.parametrize("encoding", list(COMPRESSED))
async def test_a_compressed_stream_is_encoded_as_it_comes(
    encoding: AudioEncoding, transcriber: Transcriber
) -> None:
    speech, rate = piper_pcm(SPOKEN)
    container, early_by = COMPRESSED[encoding]
    if container == "wav":
        data = wav_bytes(speech, rate)
    else:
        data = await encode_with_ffmpeg(speech, rate, container)
    size = len(data) // 12
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    received: list[tuple[float, bytes]] = []
    encoder = OpusStreamEncoder(
        Transcoder(AudioSettings()),
        lambda packet: received.append((time.monotonic(), packet)),
        gain_db=0.0,
    )
    fed: list[float] = []
    for piece in pieces:
        await encoder.feed(AudioChunk(piece, encoding, 0, 0))
        fed.append(time.monotonic())
        await asyncio.sleep(0.1)
    encoded = await encoder.finish()
    assert received, "no packet came"
    if early_by is not None:
        early = sum(1 for at in fed if at < received[0][0])
        assert early <= early_by, f"the first packet came after {early} of {len(pieces)} pieces"
    assert [p for _, p in received] == opus_packets(encoded.data)
    assert encoded.duration_s == pytest.approx(len(speech) / 2 / rate, abs=0.1)
    assert word_error_rate(SPOKEN, transcriber.transcribe(encoded.data)) <= 0.2


@pytest.mark.parametrize("gain_db", [0.0, 10.0])
async def test_the_encoder_applies_a_fixed_gain_then_the_limiter(gain_db: float) -> None:
    settings = AudioSettings()
    quiet: list[Loudness] = []
    loud: list[Loudness] = []
    for amplitude, results in ((0.05, quiet), (0.8, loud)):
        encoder = OpusStreamEncoder(Transcoder(settings), lambda _: None, gain_db=gain_db)
        await encoder.feed(pcm(2.0, amplitude=amplitude))
        results.append((await encoder.finish()).loudness)
    reference = OpusStreamEncoder(Transcoder(settings), lambda _: None, gain_db=0.0)
    await reference.feed(pcm(2.0, amplitude=0.05))
    plain = (await reference.finish()).loudness
    assert quiet[0].integrated_lufs - plain.integrated_lufs == pytest.approx(gain_db, abs=0.5)
    assert loud[0].true_peak_dbtp <= settings.true_peak_dbtp + 0.5  # the limiter holds


async def test_a_stream_in_another_format_than_expected_restarts_ffmpeg() -> None:
    received: list[bytes] = []
    encoder = OpusStreamEncoder(Transcoder(AudioSettings()), received.append, gain_db=None)
    await encoder.start(StreamFormat(AudioEncoding.PCM_S16LE, 16_000, 1))
    await encoder.feed(pcm(1.0, rate=22_050))
    assert encoder.format == StreamFormat(AudioEncoding.PCM_S16LE, 22_050, 1)
    encoded = await encoder.finish()
    assert encoded.duration_s == pytest.approx(1.0, abs=0.03)  # not read at the wrong rate
    assert len(received) == 51  # 1 s and the pre-skip


# -- the pipeline with streaming providers -----------------------------------------------------


@pytest.fixture
async def together() -> AsyncIterator[TimedTogether]:
    # 0.2 s of audio per event, one event every 0.2 s: as fast as it plays
    async with TimedTogether(chunk_seconds=0.2, chunk_delay=0.2) as api:
        yield api


def settings_for(api: TimedTogether, tmp_path: Path, **section: Any) -> config.Settings:
    more = section.pop("settings", {})
    return config.load(
        data_dir=tmp_path / "data",
        cache={"enabled": True},
        providers={"together": {"base_url": api.base_url, "api_key": KEY, **section}},
        **more,
    )


@pytest.fixture
async def speech(together: TimedTogether, tmp_path: Path) -> AsyncIterator[SpeechPipeline]:
    pipeline = SpeechPipeline(settings_for(together, tmp_path))
    yield pipeline
    await pipeline.aclose()


@pytest.fixture
async def breaking(together: TimedTogether, tmp_path: Path) -> AsyncIterator[SpeechPipeline]:
    """A pipeline whose Together streams break off after their first event: the second comes
    after the client stopped waiting (0.3 s)."""
    together.chunk_delay = 1.0
    pipeline = SpeechPipeline(settings_for(together, tmp_path, stream_read_timeout_s=0.3))
    yield pipeline
    await pipeline.aclose()


async def listen(live: LiveUtterance) -> tuple[float, list[bytes]]:
    """When the first packet came (monotonic) and every packet."""
    first, packets = 0.0, []
    async for packet in live.packets():
        first = first or time.monotonic()
        packets.append(packet)
    return first, packets


async def test_a_stream_plays_before_the_server_has_finished_sending(
    speech: SpeechPipeline, together: TimedTogether
) -> None:
    live = await speech.speak_live(SpeechRequest(text=TEXT, provider="together"))
    assert isinstance(live, LiveUtterance)
    first, packets = await listen(live)
    utterance = await live.result()
    assert len(together.sent) > 10
    assert first < together.sent[-1]  # playable while the server was still sending
    assert first - together.sent[0] < 0.2  # right after its first event
    assert opus_packets(utterance.audio) == packets  # the complete Ogg Opus of the stream
    assert utterance.duration_s == pytest.approx(len(TEXT) * 0.06, abs=0.05)
    assert utterance.voice.label == "together/hexgrad/Kokoro-82M/af_heart"
    assert utterance.timings.first_audio_s is not None
    assert utterance.timings.first_audio_s < utterance.timings.synthesis_s / 2


async def test_a_finished_stream_is_cached(speech: SpeechPipeline, together: TimedTogether) -> None:
    live = await speech.speak_live(SpeechRequest(text=TEXT, provider="together"))
    assert isinstance(live, LiveUtterance)
    streamed = await live.result()
    again = await speech.speak_live(SpeechRequest(text=TEXT, provider="together"))
    assert isinstance(again, Utterance)
    assert again.cached
    assert again.audio == streamed.audio
    assert len(together.requests_to(SPEECH)) == 1
    plain = await speech.speak(SpeechRequest(text=TEXT, provider="together"))
    assert plain.cached  # the same key: any sink gets the streamed audio
    assert len(together.requests_to(SPEECH)) == 1


SHORT = "The parcel is at the door."


async def test_a_stream_asked_again_while_it_plays_is_read_not_bought_again(
    speech: SpeechPipeline, together: TimedTogether
) -> None:
    """Two members (or guilds) ask one new sentence a moment apart: one streamed call, and the
    second hears every packet from the first, under its own request."""
    first = await speech.speak_live(SpeechRequest(text=SHORT, provider="together"))
    assert isinstance(first, LiveUtterance)
    leading = asyncio.create_task(listen(first))
    async with asyncio.timeout(5):
        while first.put_count < 3:  # noqa: ASYNC110 - until the stream is under way
            await asyncio.sleep(0.01)
    asked = SpeechRequest(text=SHORT, provider="together")
    second = await speech.speak_live(asked)
    assert isinstance(second, LiveUtterance)
    assert second.follows == first.request_id
    _, heard_first = await leading
    _, heard_second = await listen(second)
    made, read = await first.result(), await second.result()
    assert together.billed_calls == 1
    assert heard_second == heard_first  # from its first packet, not from where it joined
    assert opus_packets(read.audio) == heard_second
    assert (read.request_id, read.cached, read.cost_usd) == (asked.id, True, None)
    assert (made.request_id, made.cached) == (first.request_id, False)
    again = await speech.speak_live(SpeechRequest(text=SHORT, provider="together"))
    assert isinstance(again, Utterance) and again.cached  # over: from the cache
    assert together.billed_calls == 1


async def test_a_stream_goes_on_while_anyone_still_listens(
    speech: SpeechPipeline, together: TimedTogether
) -> None:
    """The first listener skips (its playback cut): the synthesis goes on for the second, and
    stops once the second skips too."""
    first = await speech.speak_live(SpeechRequest(text=TEXT, provider="together"))
    second = await speech.speak_live(SpeechRequest(text=TEXT, provider="together"))
    assert isinstance(first, LiveUtterance) and isinstance(second, LiveUtterance)
    first.cancel()
    _, heard = await listen(second)
    spoken = await second.result()
    assert opus_packets(spoken.audio) == heard
    assert spoken.duration_s == pytest.approx(len(TEXT) * 0.06, abs=0.05)  # all of it
    assert together.billed_calls == 1

    third = await speech.speak_live(SpeechRequest(text=SHORT + " Again.", provider="together"))
    fourth = await speech.speak_live(SpeechRequest(text=SHORT + " Again.", provider="together"))
    assert isinstance(third, LiveUtterance) and isinstance(fourth, LiveUtterance)
    third.cancel()
    fourth.cancel()
    with pytest.raises(asyncio.CancelledError):
        await fourth.result()
    assert third.outcome() is None
    prepared = await speech.prepare(SpeechRequest(text=SHORT + " Again.", provider="together"))
    assert not await speech.will_hit(prepared)  # stopped: nothing half-made is cached
    before = together.billed_calls  # 1 or 2: the stopped one may not have reached the server
    late = await speech.speak_live(SpeechRequest(text=SHORT + " Again.", provider="together"))
    assert isinstance(late, LiveUtterance) and late.follows is None  # a stopped one is not read
    await late.result()
    assert together.billed_calls == before + 1


async def test_a_whole_utterance_asked_while_its_stream_plays_waits_for_it(
    speech: SpeechPipeline, together: TimedTogether
) -> None:
    live = await speech.speak_live(SpeechRequest(text=SHORT, provider="together"))
    assert isinstance(live, LiveUtterance)
    asked = SpeechRequest(text=SHORT, provider="together")
    whole = await speech.speak(asked)
    streamed = await live.result()
    assert (whole.request_id, whole.cached) == (asked.id, True)
    assert whole.audio == streamed.audio
    assert together.billed_calls == 1


async def test_a_stream_that_breaks_off_fails_every_reader_and_each_may_ask_again(
    breaking: SpeechPipeline, together: TimedTogether
) -> None:
    readers = [
        await breaking.speak_live(SpeechRequest(text=SHORT, provider="together", fallback=False))
        for _ in range(2)
    ]
    for reader in readers:
        assert isinstance(reader, LiveUtterance)
        with pytest.raises(ProviderUnavailable):
            await listen(reader)
    assert together.billed_calls == 1  # one call, one failure, told to both
    together.chunk_delay = 0.05
    again = await breaking.speak_live(SpeechRequest(text=SHORT, provider="together"))
    assert isinstance(again, LiveUtterance) and again.follows is None
    assert (await again.result()).duration_s > 1


async def test_a_voice_gets_the_gain_learned_from_its_last_stream(
    speech: SpeechPipeline,
) -> None:
    target = speech.settings.audio.loudness_target_lufs
    levels = []
    for text in ("The first stream of this voice.", "The second stream of this voice."):
        live = await speech.speak_live(SpeechRequest(text=text, provider="together"))
        assert isinstance(live, LiveUtterance)
        levels.append((await live.result()).loudness_lufs)
    first, second = levels
    assert first is not None and second is not None
    assert abs(first - target) > 1.5  # the first plays at the voice's own level (0 dB)
    assert second == pytest.approx(target, abs=0.7)  # the next one at the learned gain


async def test_a_voice_that_streamed_has_an_encoder_waiting_for_its_next_stream(
    speech: SpeechPipeline,
) -> None:
    live = await speech.speak_live(SpeechRequest(text=TEXT, provider="together"))
    assert isinstance(live, LiveUtterance)
    spoken = await live.result()
    await asyncio.sleep(0.5)  # it starts in the background
    waiting = await speech.stream_encoders.take(spoken.voice, lambda _: None)
    try:
        assert waiting.running  # ffmpeg started before any audio of the next stream
        assert waiting.fed_bytes == 0
        assert waiting.format == StreamFormat(AudioEncoding.PCM_S16LE, 24_000, 1)
        assert waiting.gain_db == speech.stream_encoders.gain_db(spoken.voice)
    finally:
        await waiting.abort()


async def test_a_stream_that_breaks_off_is_not_retried_or_cached(
    breaking: SpeechPipeline, together: TimedTogether
) -> None:
    asked = SpeechRequest(text=TEXT, provider="together", fallback=False)
    live = await breaking.speak_live(asked)
    assert isinstance(live, LiveUtterance)
    packets: list[bytes] = []

    async def play() -> None:
        async for packet in live.packets():
            packets.append(packet)

    with pytest.raises(ProviderUnavailable):
        await play()
    assert packets  # the audio that came was played
    # a retry (a timeout is retryable) would start the sentence again: none was made;
    # with no fallback it ends there
    assert len(together.requests_to(SPEECH)) == 1
    prepared = await breaking.prepare(SpeechRequest(text=TEXT, provider="together"))
    assert not await breaking.will_hit(prepared)


async def test_a_stream_that_breaks_off_is_said_again_by_the_fallback(
    together: TimedTogether, tmp_path: Path
) -> None:
    together.inject_stream_error(after_chunks=3, message="Inference failed on GPU 3")
    pipeline = SpeechPipeline(settings_for(together, tmp_path))
    try:
        live = await pipeline.speak_live(SpeechRequest(text=TEXT, provider="together"))
        assert isinstance(live, LiveUtterance)
        _, packets = await listen(live)  # no error: the sentence was said in the end
        utterance = await live.result()
    finally:
        await pipeline.aclose()
    assert utterance.voice.provider == "piper"
    said_again = opus_packets(utterance.audio)
    assert packets[-len(said_again) :] == said_again  # piper's whole sentence, after
    broken_s = (len(packets) - len(said_again)) * 0.02
    assert 0.1 < broken_s <= 0.6  # what came of together's 0.6 s before it broke
    (note,) = utterance.fallbacks
    assert note.provider == "together"
    assert f"stream broke off after {broken_s:.1f} s of audio" in note.reason
    assert "Inference failed on GPU 3" in note.reason
    assert "said again from its start" in note.reason
    assert len(together.requests_to(SPEECH)) == 1


async def test_a_text_whose_stream_broke_off_stays_with_the_voice_that_took_over(
    together: TimedTogether, tmp_path: Path
) -> None:
    text = "The parcel has arrived. It is at the front door. Please collect it soon."
    together.inject_stream_error(after_chunks=2, text="parcel")  # the first sentence's stream
    pipeline = SpeechPipeline(settings_for(together, tmp_path))
    asked = SpeechRequest(text=text, provider="together")
    said: list[Utterance] = []
    heard = 0
    try:
        async for segment in pipeline.speak_sentences(asked, live=True):
            if isinstance(segment.speech, LiveUtterance):
                heard += len((await listen(segment.speech))[1])
                said.append(await segment.speech.result())
            else:
                heard += len(opus_packets(segment.speech.audio))
                said.append(segment.speech)
    finally:
        await pipeline.aclose()
    assert [u.text for u in said] == split_sentences(text)  # nothing cut
    assert [u.voice.provider for u in said] == ["piper"] * 3  # no back and forth
    assert heard > sum(len(opus_packets(u.audio)) for u in said)  # the broken part came first
    (note,) = join_utterances(asked, said).fallbacks  # the reply says so once
    assert note.provider == "together" and "stream broke off" in note.reason


async def test_a_provider_failing_before_any_audio_hands_over_to_the_fallback(
    together: TimedTogether, tmp_path: Path
) -> None:
    together.inject_overload()
    pipeline = SpeechPipeline(
        settings_for(together, tmp_path, settings={"rate_limits": {"retries": 0}})
    )
    try:
        live = await pipeline.speak_live(SpeechRequest(text="Hello there.", provider="together"))
        assert isinstance(live, LiveUtterance)
        _, packets = await listen(live)
        utterance = await live.result()
    finally:
        await pipeline.aclose()
    assert utterance.voice.provider == "piper"
    assert [n.provider for n in utterance.fallbacks] == ["together"]
    assert packets == opus_packets(utterance.audio)


@pytest.mark.parametrize(
    ("response_format", "piece_bytes"),
    [("pcm", 9_600), ("mp3", 1_200)],  # 0.2 s of 24 kHz PCM; some 0.2-0.3 s of MP3
)
async def test_an_openai_compatible_chunked_body_streams(
    tmp_path: Path, response_format: str, piece_bytes: int
) -> None:
    # one piece every 0.2 s
    async with FakeOpenAISpeech(chunk_bytes=piece_bytes, chunk_delay=0.2) as api:
        section = {"type": "openai", "base_url": api.url("/v1"), "model": "kokoro"}
        section["response_format"] = response_format
        settings = config.load(data_dir=tmp_path / "data", providers={"kokoro": section})
        pipeline = SpeechPipeline(settings)
        try:
            started = time.monotonic()
            live = await pipeline.speak_live(SpeechRequest(text=TEXT, provider="kokoro"))
            assert isinstance(live, LiveUtterance)
            first, packets = await listen(live)
            done = time.monotonic()
            utterance = await live.result()
        finally:
            await pipeline.aclose()
    assert first - started < 1.0
    assert done - started > 1.5  # the body took that long to come
    assert opus_packets(utterance.audio) == packets
    assert utterance.duration_s == pytest.approx(len(TEXT) * 0.06, abs=0.15)


async def test_a_voice_that_does_not_stream_gives_the_whole_utterance(
    pipeline: SpeechPipeline,
) -> None:
    spoken = await pipeline.speak_live(SpeechRequest(text="Hello there."))
    assert isinstance(spoken, Utterance)  # Piper: made whole, normalised, as before
    assert spoken.voice.provider == "piper"
