"""The optimized copy of a Piper model (integrations.piper.engine.open_voice): made once, read
on later loads with the same audio, remade when the model changes, and never in the way: an
unreadable copy is rebuilt, an unwritable folder means no copy. And the heap Piper freed goes
back to the system after long pieces and when Piper is idle, not after every sentence."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from piper import PiperVoice, SynthesisConfig

from integrations.piper import engine
from integrations.piper.engine import IdleTrim, open_voice, optimized_name
from integrations.piper.models import builtin_model_path, config_path_of

#: No variation between takes: the same model gives the same samples.
SAME_TAKE = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
TEXT = "The front door has been left open."


def say(voice: PiperVoice) -> bytes:
    return b"".join(chunk.audio_int16_bytes for chunk in voice.synthesize(TEXT, SAME_TAKE))


@pytest.fixture(scope="module")
def reference() -> bytes:
    """The built-in voice's samples, loaded without a copy."""
    model = builtin_model_path()
    return say(open_voice(model, config_path_of(model)))


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """A copy of the built-in voice that a test may change."""
    source = builtin_model_path()
    copy = tmp_path / "voices" / source.name
    copy.parent.mkdir()
    shutil.copy2(source, copy)
    shutil.copy2(config_path_of(source), config_path_of(copy))
    return copy


def test_the_copy_is_made_once_and_read_after(
    model: Path, tmp_path: Path, reference: bytes
) -> None:
    cache = tmp_path / "cache"
    assert say(open_voice(model, config_path_of(model), cache)) == reference
    (copy,) = cache.glob("*.onnx")
    assert copy.name == optimized_name(model)[0]
    made = copy.stat().st_ino
    assert say(open_voice(model, config_path_of(model), cache)) == reference
    assert list(cache.glob("*.onnx")) == [copy]
    assert copy.stat().st_ino == made  # read, not made again (a new one replaces the file)


def test_a_changed_model_gets_a_new_copy_and_the_old_one_goes(model: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    open_voice(model, config_path_of(model), cache)
    (old,) = cache.glob("*.onnx")
    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    open_voice(model, config_path_of(model), cache)
    (new,) = cache.glob("*.onnx")
    assert new != old
    assert new.name == optimized_name(model)[0]


def test_an_unreadable_copy_is_rebuilt(
    model: Path, tmp_path: Path, reference: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    open_voice(model, config_path_of(model), cache)
    (copy,) = cache.glob("*.onnx")
    copy.write_bytes(copy.read_bytes()[:100_000])  # cut short, as by a full disk
    with caplog.at_level(logging.WARNING):
        assert say(open_voice(model, config_path_of(model), cache)) == reference
    assert "is unusable" in caplog.text
    assert copy.stat().st_size > 60_000_000
    assert say(open_voice(model, config_path_of(model), cache)) == reference


def test_a_folder_that_cannot_be_written_means_no_copy(
    model: Path, tmp_path: Path, reference: bytes
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder", encoding="utf-8")
    assert say(open_voice(model, config_path_of(model), blocked / "cache")) == reference
    assert not (tmp_path / "voices" / "cache").exists()


# -- giving the heap back --------------------------------------------------------------------


def test_the_heap_is_trimmed_once_piper_is_idle_never_during_a_synthesis() -> None:
    trims: list[float] = []
    idle = IdleTrim(lambda: trims.append(time.monotonic()), idle_s=0.5)
    with idle.running():
        with idle.running():  # two syntheses at once
            pass
        time.sleep(0.8)  # the other still runs: no trim while it does
        assert trims == []
    ended = time.monotonic()
    time.sleep(0.1)
    with idle.running():  # a new one within the idle time puts the trim off again
        pass
    time.sleep(1.0)
    assert len(trims) == 1  # once, for the whole burst
    assert trims[0] - ended >= 0.55  # 0.5 s after the last one ended, not after the first
    time.sleep(0.6)
    assert len(trims) == 1


def test_one_thread_waits_for_the_idle_time_none_is_started_per_synthesis() -> None:
    trims: list[int] = []
    idle = IdleTrim(lambda: trims.append(1), idle_s=0.3)
    before = set(threading.enumerate())
    for _ in range(5):
        with idle.running():
            pass
    started = set(threading.enumerate()) - before
    assert [t.name for t in started] == ["oyez-piper-trim"]  # one, for every synthesis
    time.sleep(0.6)
    assert trims == [1]
    with idle.running():  # the thread slept without a time out: a new synthesis wakes it
        pass
    time.sleep(0.6)
    assert trims == [1, 1]
    assert set(threading.enumerate()) - before == started


def test_long_pieces_are_trimmed_at_once_short_sentences_only_when_idle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trims: list[int] = []
    idle = IdleTrim(lambda: trims.append(1), idle_s=60)
    monkeypatch.setattr(engine, "_IDLE_TRIM", idle)
    model = builtin_model_path()
    voice = open_voice(model, config_path_of(model))
    short = "The front door has been left open."
    list(engine.synthesize_pieces(voice, short, SAME_TAKE))
    assert trims == []  # a short sentence: its heap is reused by the next one
    long = " ".join(["the bins go out tonight and the recycling tomorrow"] * 3)
    assert len(long) > engine.TRIM_AFTER_CHARS
    list(engine.synthesize_pieces(voice, long, SAME_TAKE))
    assert trims == [1]
