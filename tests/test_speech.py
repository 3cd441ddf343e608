from datetime import UTC, datetime, timedelta

import pytest

from bot.errors import InvalidRequest
from bot.speech import AudioChunk, AudioEncoding, OutputProfile, Priority, SpeechRequest


def test_defaults_and_unique_ids() -> None:
    a, b = SpeechRequest(text="hi"), SpeechRequest(text="hi")
    assert a.id != b.id
    assert a.output is OutputProfile.OGG_OPUS
    assert a.priority is Priority.NORMAL
    assert a.provider is None and a.voice is None and a.model is None
    assert a.expires_at is None and a.overdue_s() == float("-inf")


def test_overdue_counts_from_expiry() -> None:
    now = datetime.now(UTC)
    request = SpeechRequest(text="hi", created_at=now, expires_at=now + timedelta(seconds=300))
    assert request.expires_at is not None
    assert request.expires_at - request.created_at == timedelta(seconds=300)
    assert request.overdue_s() < -299
    assert request.overdue_s(request.created_at + timedelta(seconds=301)) == pytest.approx(1.0)


def test_naive_times_are_refused() -> None:
    with pytest.raises(InvalidRequest, match=r"expires_at: .*time zone"):
        SpeechRequest.build(text="hi", expires_at=datetime(2030, 1, 1))


def test_build_names_every_bad_field() -> None:
    with pytest.raises(InvalidRequest) as caught:
        SpeechRequest.build(text="hi", output="flac", priority="urgent", colour="red")
    message = str(caught.value)
    assert "output:" in message and "priority:" in message and "colour: unknown field" in message


def test_blank_provider_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="provider"):
        SpeechRequest.build(text="hi", provider="  ")


def test_priority_order() -> None:
    assert Priority.LOW.rank < Priority.NORMAL.rank < Priority.HIGH.rank


@pytest.mark.parametrize(
    ("suffix", "profile"),
    [
        (".ogg", OutputProfile.OGG_OPUS),
        (".OPUS", OutputProfile.OGG_OPUS),
        (".mp3", OutputProfile.MP3),
        (".wav", OutputProfile.WAV),
        (".flac", None),
    ],
)
def test_profile_from_extension(suffix: str, profile: OutputProfile | None) -> None:
    assert OutputProfile.for_path(suffix) is profile


def test_pcm_chunk_duration() -> None:
    chunk = AudioChunk(b"\x00\x00" * 22050, AudioEncoding.PCM_S16LE, 22050, 1)
    assert chunk.duration_s == pytest.approx(1.0)
    assert AudioChunk(b"xx", AudioEncoding.MP3, 0, 0).duration_s is None


def test_one_table_names_each_profile_s_files() -> None:
    assert [(p.extension, p.mime_type, p.file_type.description) for p in OutputProfile] == [
        (".ogg", "audio/ogg", "Ogg Opus"),
        (".mp3", "audio/mpeg", "MP3"),
        (".wav", "audio/wav", "WAV PCM s16le"),
    ]
    assert all(OutputProfile.for_path(p.extension.upper()) is p for p in OutputProfile)
