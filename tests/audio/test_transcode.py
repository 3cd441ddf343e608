"""The transcoder with real ffmpeg on real Piper speech."""

from __future__ import annotations

import asyncio
import io
import stat
import subprocess
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from bot.audio import libav
from bot.audio.mix import decode_chime
from bot.audio.transcode import (
    BUILD_AHEAD_DELAY_S,
    Transcoder,
    VoiceGains,
    find_ffmpeg,
    mp3_rate,
)
from bot.errors import AudioError, FFmpegNotFound, TranscodeError
from bot.ops import config
from bot.ops.config import AudioSettings, Settings
from bot.providers.base import SynthesisJob
from bot.speech import AudioChunk, AudioEncoding, OutputProfile
from integrations.piper import PiperProvider
from tests.support.asr import Transcriber, decode, word_error_rate
from tests.support.probe import (
    describe,
    integrated_loudness,
    ogg_packets,
    opus_frame_ms,
    opus_head,
)

SENTENCE = "The washing machine has finished. Please hang the laundry before it starts to smell."


@pytest.fixture
async def speech(settings: Settings) -> AudioChunk:
    """Real Piper output: PCM s16le mono at the voice's rate."""
    provider = PiperProvider.from_settings(settings)
    voice = await provider.resolve_voice(None, None)
    return (await provider.synthesize(SynthesisJob("t", SENTENCE, voice))).chunk


def _decoded_duration(audio: bytes) -> float:
    return len(decode(audio, 48_000)) / 48_000


async def test_discord_profile_is_ogg_opus_48k_stereo_20ms(speech: AudioChunk) -> None:
    encoded = await Transcoder(AudioSettings()).transcode([speech], OutputProfile.OGG_OPUS)
    assert encoded.data[:4] == b"OggS"
    assert "opus, 48000 Hz, stereo" in describe(encoded.data)
    packets = ogg_packets(encoded.data)
    assert opus_head(packets[0])["channels"] == 2
    assert packets[1].startswith(b"OpusTags")
    audio_packets = packets[2:]
    assert len(audio_packets) > 50
    assert {opus_frame_ms(p) for p in audio_packets} == {20.0}
    assert {p[0] & 0x03 for p in audio_packets} == {0}  # one frame per packet


async def test_duration_is_kept_within_five_percent(speech: AudioChunk) -> None:
    assert speech.duration_s is not None
    source = speech.duration_s
    for profile in OutputProfile:
        encoded = await Transcoder(AudioSettings()).transcode([speech], profile)
        assert encoded.duration_s == pytest.approx(source, rel=0.05)
        assert _decoded_duration(encoded.data) == pytest.approx(source, rel=0.05), profile


@pytest.mark.parametrize("target", [-16.0, -23.0])
async def test_loudness_reaches_the_target(speech: AudioChunk, target: float) -> None:
    settings = AudioSettings(loudness_target_lufs=target)
    encoded = await Transcoder(settings).transcode([speech], OutputProfile.OGG_OPUS)
    assert integrated_loudness(encoded.data) == pytest.approx(target, abs=1.5)
    assert encoded.loudness.integrated_lufs == pytest.approx(target, abs=1.5)
    assert encoded.loudness.true_peak_dbtp <= settings.true_peak_dbtp + 0.5


async def test_normalisation_can_be_turned_off(speech: AudioChunk) -> None:
    quiet = AudioChunk(
        bytes(
            b
            for i in range(0, len(speech.data), 2)
            for b in (int.from_bytes(speech.data[i : i + 2], "little", signed=True) // 8).to_bytes(
                2, "little", signed=True
            )
        ),
        speech.encoding,
        speech.sample_rate,
        1,
    )
    off = await Transcoder(AudioSettings(normalize_loudness=False)).transcode(
        [quiet], OutputProfile.WAV
    )
    on = await Transcoder(AudioSettings()).transcode([quiet], OutputProfile.WAV)
    assert integrated_loudness(off.data) < -30  # 18 dB down from Piper's ~-19 LUFS
    assert integrated_loudness(on.data) == pytest.approx(-16, abs=1.5)


async def test_mp3_profile(speech: AudioChunk, transcriber: Transcriber) -> None:
    """LAME in this process (lameenc): the words are heard, at the loudness, 128 kbit/s, at
    the voice's own 22.05 kHz (MPEG-2 Layer III, as Home Assistant's tts.speak serves Piper)."""
    encoded = await Transcoder(AudioSettings()).transcode([speech], OutputProfile.MP3)
    assert word_error_rate(SENTENCE, transcriber.transcribe(encoded.data)) <= 0.2
    assert integrated_loudness(encoded.data) == pytest.approx(-16, abs=1.0)
    info = describe(encoded.data)
    assert speech.sample_rate == 22_050
    assert info.startswith("mp3") and "22050 Hz, mono" in info
    bitrate = int(info.rsplit(",", 1)[1].strip().split()[0])
    assert bitrate >= 128
    assert (encoded.spec.sample_rate, encoded.spec.channels) == (22_050, 1)
    stereo = await Transcoder(AudioSettings(mp3_channels=2)).transcode([speech], OutputProfile.MP3)
    assert "22050 Hz, stereo" in describe(stereo.data)


@pytest.mark.parametrize(
    ("audio", "heard"),
    [
        (AudioSettings(mp3_sample_rate=44_100), 44_100),  # asked for: resampled
        (AudioSettings(mp3_sample_rate=16_000), 16_000),
        (AudioSettings(mp3_bitrate_kbps=192), 44_100),  # more than MPEG-2 carries: MPEG-1
    ],
    ids=["asked 44.1 kHz", "asked 16 kHz", "192 kbit/s"],
)
async def test_mp3_rate_is_the_one_asked_or_one_that_carries_the_bitrate(
    speech: AudioChunk, transcriber: Transcriber, audio: AudioSettings, heard: int
) -> None:
    encoded = await Transcoder(audio).transcode([speech], OutputProfile.MP3)
    info = describe(encoded.data)
    assert f"{heard} Hz, mono" in info
    assert encoded.spec.sample_rate == heard
    bitrate = int(info.rsplit(",", 1)[1].strip().split()[0])
    assert bitrate >= (audio.mp3_bitrate_kbps if heard >= 32_000 else 128)
    assert word_error_rate(SENTENCE, transcriber.transcribe(encoded.data)) <= 0.2
    assert encoded.duration_s == pytest.approx(speech.duration_s, rel=0.05)


@pytest.mark.parametrize(
    ("source", "bitrate", "rate"),
    [
        (22_050, 128, 22_050),
        (16_000, 160, 16_000),
        (24_000, 192, 44_100),  # MPEG-2 ends at 160 kbit/s
        (48_000, 320, 48_000),
        (44_100, 128, 44_100),
        (8_000, 128, 8_000),
        (96_000, 128, 44_100),  # no MP3 rate
        (20_000, 128, 44_100),
    ],
)
def test_mp3_rate_keeps_the_audios_rate_where_mp3_has_it(
    source: int, bitrate: int, rate: int
) -> None:
    assert mp3_rate(source, AudioSettings(mp3_bitrate_kbps=bitrate)) == rate
    assert mp3_rate(source, AudioSettings(mp3_sample_rate=32_000)) == 32_000


@pytest.mark.parametrize("profile", [OutputProfile.MP3, OutputProfile.WAV])
async def test_audio_made_at_one_rate_is_resampled_to_another_the_same_otherwise(
    speech: AudioChunk, transcriber: Transcriber, profile: OutputProfile
) -> None:
    transcoder = Transcoder(AudioSettings())
    encoded = await transcoder.transcode([speech], profile)
    assert encoded.spec.sample_rate == 22_050
    moved = await transcoder.at_rate(encoded.data, profile, 16_000)
    assert "16000 Hz, mono" in describe(moved)
    assert _decoded_duration(moved) == pytest.approx(_decoded_duration(encoded.data), rel=0.05)
    assert integrated_loudness(moved) == pytest.approx(integrated_loudness(encoded.data), abs=0.5)
    assert word_error_rate(SENTENCE, transcriber.transcribe(moved)) <= 0.2
    with pytest.raises(ValueError, match="one rate"):
        await transcoder.at_rate(encoded.data, OutputProfile.OGG_OPUS, 16_000)
    with pytest.raises(TranscodeError, match="resampling"):
        await transcoder.at_rate(b"not audio at all" * 20, profile, 16_000)


async def test_wav_profile_keeps_the_voices_rate_and_reaches_the_loudness(
    speech: AudioChunk,
) -> None:
    """PCM at the voice's own rate (nothing resampled, as wyoming-piper sends it), normalised."""
    encoded = await Transcoder(AudioSettings()).transcode([speech], OutputProfile.WAV)
    assert speech.sample_rate == 22_050
    assert encoded.spec.sample_rate == speech.sample_rate
    with wave.open(io.BytesIO(encoded.data)) as wav:
        assert wav.getsampwidth() == 2
        assert wav.getframerate() == speech.sample_rate
        assert wav.getnchannels() == 1
        assert speech.duration_s is not None
        assert wav.getnframes() / speech.sample_rate == pytest.approx(speech.duration_s, rel=0.01)
    assert integrated_loudness(encoded.data) == pytest.approx(-16, abs=1.0)
    assert encoded.loudness.integrated_lufs == pytest.approx(-16, abs=1.0)


async def test_wav_from_mp3_keeps_the_decoded_rate(speech: AudioChunk) -> None:
    mp3 = await Transcoder(AudioSettings(mp3_sample_rate=44_100)).transcode(
        [speech], OutputProfile.MP3
    )
    encoded = await Transcoder(AudioSettings()).transcode(
        [AudioChunk(mp3.data, AudioEncoding.MP3, 0, 0)], OutputProfile.WAV
    )
    with wave.open(io.BytesIO(encoded.data)) as wav:
        assert wav.getframerate() == encoded.spec.sample_rate == 44_100


async def test_encoded_provider_audio_is_decoded(speech: AudioChunk) -> None:
    """Cloud providers send MP3 or WAV; several WAV chunks are decoded one by one."""
    encoded = await asyncio.to_thread(
        subprocess.run,
        [find_ffmpeg(), "-v", "error", "-f", "s16le", "-ar", str(speech.sample_rate)]
        + ["-ac", "1", "-i", "pipe:0", "-f", "mp3", "pipe:1"],
        input=speech.data,
        capture_output=True,
        check=True,
    )
    mp3 = encoded.stdout
    transcoder = Transcoder(AudioSettings())
    from_mp3 = await transcoder.transcode(
        [AudioChunk(mp3, AudioEncoding.MP3, 0, 0)], OutputProfile.OGG_OPUS
    )
    assert speech.duration_s is not None
    assert from_mp3.duration_s == pytest.approx(speech.duration_s, abs=0.1)

    wav = (await transcoder.transcode([speech], OutputProfile.WAV)).data
    twice = await transcoder.transcode(
        [AudioChunk(wav, AudioEncoding.WAV, 0, 0)] * 2, OutputProfile.OGG_OPUS
    )
    assert twice.duration_s == pytest.approx(2 * speech.duration_s, rel=0.02)


async def test_garbage_is_a_clear_error_not_a_hang() -> None:
    garbage = b"this is not audio at all " * 400
    started = time.monotonic()
    with pytest.raises(TranscodeError) as caught:
        await Transcoder(AudioSettings()).transcode(
            [AudioChunk(garbage, AudioEncoding.MP3, 0, 0)], OutputProfile.OGG_OPUS
        )
    assert time.monotonic() - started < 10
    assert "mp3" in str(caught.value)
    assert caught.value.stderr_tail  # what ffmpeg said is carried to the user


async def test_empty_audio_is_an_error() -> None:
    with pytest.raises(AudioError, match="no audio"):
        await Transcoder(AudioSettings()).transcode(
            [AudioChunk(b"", AudioEncoding.PCM_S16LE, 22050, 1)], OutputProfile.OGG_OPUS
        )


async def test_raw_pcm_needs_a_sample_rate() -> None:
    with pytest.raises(AudioError, match="sample rate"):
        await Transcoder(AudioSettings()).transcode(
            [AudioChunk(b"\x00" * 100, AudioEncoding.PCM_S16LE, 0, 1)], OutputProfile.OGG_OPUS
        )


async def test_a_stuck_ffmpeg_is_stopped(tmp_path: Path) -> None:
    stuck = tmp_path / "ffmpeg"
    stuck.write_text("#!/bin/sh\necho 'pretending to work' >&2\nexec sleep 30\n")
    stuck.chmod(stuck.stat().st_mode | stat.S_IEXEC)
    settings = AudioSettings(ffmpeg_path=stuck, ffmpeg_timeout_s=0.5)
    started = time.monotonic()
    # utterances are read and encoded in this process: a chime is still ffmpeg's to decode
    with pytest.raises(TranscodeError, match=r"did not finish decoding the chime within 0\.5 s"):
        await decode_chime(Transcoder(settings), b"RIFF")
    assert time.monotonic() - started < 5


def test_configured_ffmpeg_must_exist(tmp_path: Path) -> None:
    with pytest.raises(FFmpegNotFound, match="ffmpeg_path"):
        find_ffmpeg(tmp_path / "missing")


def test_ffmpeg_falls_back_to_the_bundled_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    path = find_ffmpeg()
    assert "imageio_ffmpeg" in path
    assert config.load().audio.ffmpeg_path is None


async def test_a_voices_learned_gain_skips_the_measuring_pass(
    settings: Settings, speech: AudioChunk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The voice's next sentence gets its last gain at once (with the limiter), measured as it
    is made: no pass that only measures, and still within 1 LU of the target."""
    transcoder = Transcoder(AudioSettings())
    gains = VoiceGains(-16.0)
    gains.learn("joe", await transcoder.transcode([speech], OutputProfile.WAV))
    provider = PiperProvider.from_settings(settings)
    voice = await provider.resolve_voice(None, None)
    job = SynthesisJob("t2", "Dinner is ready, please come down to the kitchen now.", voice)
    other = (await provider.synthesize(job)).chunk
    passes: list[str] = []

    def counted(name: str) -> Callable[..., libav.Metered]:
        work = getattr(libav, name)

        def run(*args: Any, **kwargs: Any) -> libav.Metered:
            passes.append(name)
            return work(*args, **kwargs)  # type: ignore[no-any-return]

        return run

    for name in ("metered", "gained"):
        monkeypatch.setattr(libav, name, counted(name))
    encoded = await transcoder.transcode([other], OutputProfile.WAV, gain_db=gains.get("joe"))
    assert "metered" not in passes and 1 <= len(passes) <= 3, passes  # at most the rounds
    assert integrated_loudness(encoded.data) == pytest.approx(-16, abs=1.0)
    assert encoded.gain_db is not None


class _CountedGainStream(libav.GainStream):
    """libav's gain stream, counting the graphs built."""

    built: ClassVar[int] = 0

    def __init__(self, sample_rate: int, gain_db: float, ceiling_dbtp: float | None) -> None:
        super().__init__(sample_rate, gain_db, ceiling_dbtp)
        type(self).built += 1


async def _until_built(count: int) -> None:
    async with asyncio.timeout(5):
        while _CountedGainStream.built < count:  # noqa: ASYNC110 - built in a worker thread
            await asyncio.sleep(0.005)


async def test_the_next_sentences_graph_is_built_ahead_and_gives_the_same_audio(
    settings: Settings, speech: AudioChunk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a voice's sentence, the graph its next predicted pass first runs is built ahead:
    that pass builds one graph less and gives exactly the audio it would have given."""
    monkeypatch.setattr(libav, "GainStream", _CountedGainStream)
    _CountedGainStream.built = 0
    gains = VoiceGains(-16.0)
    gains.learn("joe", await Transcoder(AudioSettings()).transcode([speech], OutputProfile.WAV))
    provider = PiperProvider.from_settings(settings)
    voice = await provider.resolve_voice(None, None)
    job = SynthesisJob("t2", "Dinner is ready, please come down to the kitchen now.", voice)
    other = (await provider.synthesize(job)).chunk
    passes: list[float] = []
    gained = libav.gained

    def counted(data: bytes, rate: int, gain_db: float, *args: Any, **kwargs: Any) -> Any:
        passes.append(gain_db)
        return gained(data, rate, gain_db, *args, **kwargs)

    monkeypatch.setattr(libav, "gained", counted)
    alone = await Transcoder(AudioSettings()).transcode(
        [other], OutputProfile.WAV, gain_db=gains.get("joe")
    )
    rounds_alone, passes[:] = list(passes), []

    ahead = Transcoder(AudioSettings())
    ahead.build_ahead([speech], gains.get("joe"))  # the sentence before: its rate and shape
    await _until_built(1)
    encoded = await ahead.transcode([other], OutputProfile.WAV, gain_db=gains.get("joe"))
    assert passes == rounds_alone[1:]  # the first round ran on the graph built ahead
    assert (encoded.data, encoded.gain_db) == (alone.data, alone.gain_db)

    # taken by its pass: the next one with that gain builds its own again
    await ahead.transcode([other], OutputProfile.WAV, gain_db=gains.get("joe"))
    assert passes[len(rounds_alone) - 1 :] == rounds_alone
    await ahead.aclose()


async def test_nothing_is_built_ahead_for_a_pass_that_is_not_predicted_or_once_closed(
    speech: AudioChunk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Audio that is not one PCM chunk, normalisation off or no gain yet: nothing to build;
    a transcoder closed before its build starts builds nothing."""
    monkeypatch.setattr(libav, "GainStream", _CountedGainStream)
    _CountedGainStream.built = 0
    transcoder = Transcoder(AudioSettings())
    transcoder.build_ahead([speech], None)
    transcoder.build_ahead([speech, speech], -3.0)
    mp3 = AudioChunk(b"\xff\xfb" * 100, AudioEncoding.MP3, 22_050, 1)
    transcoder.build_ahead([mp3], -3.0)
    Transcoder(AudioSettings(normalize_loudness=False)).build_ahead([speech], -3.0)
    transcoder.build_ahead([speech], -3.0)
    await transcoder.aclose()
    await asyncio.sleep(BUILD_AHEAD_DELAY_S * 3)
    assert _CountedGainStream.built == 0
