"""A PCM stream normalised as it arrives (bot.audio.live.PcmStreamEncoder over
bot.audio.libav.GainStream): the pieces are what normalising the whole at once gives, the
result lands on the target, and a gain that missed is corrected in what the cache keeps."""

from __future__ import annotations

import pytest

from bot.audio.libav import GainStream, gained
from bot.audio.live import STREAM_TOLERANCE_LU, LiveUtterance, PcmStreamEncoder
from bot.audio.transcode import TOLERANCE_LU, Transcoder, wav_pcm
from bot.errors import AudioError
from bot.ops.config import AudioSettings
from bot.speech import AudioChunk, AudioEncoding, OutputProfile, Voice
from tests.fakes.audio import wav_bytes
from tests.support.probe import integrated_loudness
from tests.support.speech import piper_pcm

VOICE = Voice("piper", "en_US-joe-medium", "en_US-joe-medium", "joe", "en_US")


@pytest.fixture(scope="module")
def speech() -> tuple[bytes, int]:
    return piper_pcm("The parcel is at the door, and the courier is waiting for you.")


def pieces_of(data: bytes, size: int) -> list[bytes]:
    return [data[at : at + size] for at in range(0, len(data), size)]


@pytest.mark.parametrize("size", [7777, 4410 * 2, 100_001])
def test_a_stream_in_any_pieces_is_the_whole_normalised_at_once(
    speech: tuple[bytes, int], size: int
) -> None:
    pcm, rate = speech
    at_once = gained(pcm, rate, 6.0, -1.0, true_peak=False)
    stream = GainStream(rate, 6.0, -1.0)
    out = [stream.push(piece) for piece in pieces_of(pcm, size)]  # torn samples too
    end = stream.close()
    assert b"".join([*out, end.data]) == at_once.data
    assert end.integrated_lufs == at_once.integrated_lufs
    assert end.true_peak_dbtp == at_once.true_peak_dbtp
    assert any(out)  # samples come out while the stream goes on


class Recorded(LiveUtterance):
    """A live utterance that keeps what was handed on, for the test to look at."""

    def __init__(self) -> None:
        super().__init__("r1", "text", VOICE)
        self.handed: list[bytes] = []

    def put(self, packet: bytes) -> None:
        super().put(packet)
        self.handed.append(packet)


async def test_pieces_go_out_as_they_come_and_the_whole_lands_on_the_target(
    speech: tuple[bytes, int],
) -> None:
    pcm, rate = speech
    settings = AudioSettings()
    transcoder = Transcoder(settings)
    chunk = AudioChunk(pcm, AudioEncoding.PCM_S16LE, rate, 1)
    whole = await transcoder.transcode([chunk], OutputProfile.WAV)
    assert whole.gain_db is not None
    stream = Recorded()
    encoder = PcmStreamEncoder(transcoder, stream, whole.gain_db)  # the gain this voice needs
    for piece in pieces_of(pcm, 8192):
        await encoder.feed(AudioChunk(piece, AudioEncoding.PCM_S16LE, rate, 1))
    assert stream.sample_rate == rate
    assert len(stream.handed) >= 3  # out before the stream ended
    encoded = await encoder.finish()
    assert encoded.gain_db == whole.gain_db
    assert wav_pcm(encoded.data) == (rate, b"".join(stream.handed))  # kept is what went out
    level = integrated_loudness(encoded.data)
    assert abs(level - settings.loudness_target_lufs) <= STREAM_TOLERANCE_LU
    assert stream.put_s == pytest.approx(len(pcm) / 2 / rate, abs=0.01)


async def test_a_gain_that_missed_is_corrected_in_what_is_kept(
    speech: tuple[bytes, int],
) -> None:
    pcm, rate = speech
    settings = AudioSettings()
    transcoder = Transcoder(settings)
    stream = Recorded()
    encoder = PcmStreamEncoder(transcoder, stream, -8.0)  # far too quiet
    for piece in pieces_of(pcm, 8192):
        await encoder.feed(AudioChunk(piece, AudioEncoding.PCM_S16LE, rate, 1))
    encoded = await encoder.finish()
    handed = b"".join(stream.handed)
    assert integrated_loudness(wav_bytes(handed, rate)) < settings.loudness_target_lufs - 5
    assert abs(integrated_loudness(encoded.data) - settings.loudness_target_lufs) <= TOLERANCE_LU
    assert encoded.gain_db is not None and encoded.gain_db > 0  # what the voice learns


async def test_audio_that_is_not_pcm_or_changes_rate_is_refused(
    speech: tuple[bytes, int],
) -> None:
    pcm, rate = speech
    transcoder = Transcoder(AudioSettings())
    encoder = PcmStreamEncoder(transcoder, Recorded(), 0.0)
    with pytest.raises(AudioError, match="s16le mono"):
        await encoder.feed(AudioChunk(b"ID3" + pcm[:100], AudioEncoding.MP3, 0, 1))
    await encoder.feed(AudioChunk(pcm[:4096], AudioEncoding.PCM_S16LE, rate, 1))
    with pytest.raises(AudioError, match="changed rate"):
        await encoder.feed(AudioChunk(pcm[:4096], AudioEncoding.PCM_S16LE, 16_000, 1))
    with pytest.raises(AudioError, match="no audio"):
        await PcmStreamEncoder(transcoder, Recorded(), 0.0).finish()
