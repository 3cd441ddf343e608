"""The optimized copy of a Piper model (integrations.piper.engine.open_voice): made once, read
on later loads with the same audio, remade when the model changes, and never in the way: an
unreadable copy is rebuilt, an unwritable folder means no copy."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest
from piper import PiperVoice, SynthesisConfig

from integrations.piper.engine import open_voice, optimized_name
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
    (copy,) = cache.iterdir()
    assert copy.name == optimized_name(model)[0]
    made = copy.stat().st_mtime_ns
    assert say(open_voice(model, config_path_of(model), cache)) == reference
    assert list(cache.iterdir()) == [copy]
    assert copy.stat().st_mtime_ns == made  # read, not made again


def test_a_changed_model_gets_a_new_copy_and_the_old_one_goes(model: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    open_voice(model, config_path_of(model), cache)
    (old,) = cache.iterdir()
    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    open_voice(model, config_path_of(model), cache)
    (new,) = cache.iterdir()
    assert new != old
    assert new.name == optimized_name(model)[0]


def test_an_unreadable_copy_is_rebuilt(
    model: Path, tmp_path: Path, reference: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    open_voice(model, config_path_of(model), cache)
    (copy,) = cache.iterdir()
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
