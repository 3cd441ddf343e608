"""What Oyez keeps in its Piper cache folder (integrations.piper.files): each model's files and
a record of the model they came from, and their pruning once the model is gone (a voice package
upgraded or a virtual environment made again: a new path, the old files left behind)."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import pytest

from integrations.piper.engine import open_voice, optimized_name
from integrations.piper.files import (
    PARTIAL_UNUSED_S,
    UNUSED_S,
    made_from,
    prune,
    used,
    versioned_name,
)
from integrations.piper.models import builtin_model_path, config_path_of


def _model(folder: Path, name: str = "en_US-test-medium.onnx") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / name
    model.write_bytes(b"not really a model")
    return model


def _made(cache: Path, model: Path, tag: str, suffix: str = ".onnx") -> Path:
    name, _ = versioned_name(model, tag, "1")
    path = cache / f"{name}{suffix}"
    path.write_bytes(b"x" * 1000)
    return path


def _aged(path: Path, seconds: float) -> Path:
    then = time.time() - seconds
    os.utime(path, (then, then))
    return path


def _record(cache: Path, model: Path) -> Path:
    """The record of ``model`` in ``cache`` (the prefix of its files, less the tag)."""
    _, prefix = versioned_name(model, "", "1")
    return cache / f"{prefix.removesuffix('-')}.source"


def test_what_was_made_from_a_model_that_is_gone_is_removed_and_nothing_else(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    here = _model(tmp_path / "venv-now")
    gone = _model(tmp_path / "venv-before")
    # a model that exists keeps its files however old they are
    mine = [_aged(_made(cache, here, ""), 2 * UNUSED_S), _made(cache, here, "split-", ".a.onnx")]
    theirs = [_made(cache, gone, ""), _made(cache, gone, "split-", ".vocoder.onnx")]
    half = theirs[1]  # a half's own optimized copy is recorded under the half
    half_copy = _made(cache, half, "")
    for model in (here, gone, half):
        made_from(cache, model)
    records = {model: _record(cache, model) for model in (here, gone, half)}
    assert all(record.is_file() for record in records.values())
    assert records[here].read_text() == str(here.resolve())
    # files with no record (made before records were kept): by how long they went unused
    unrecorded_old = cache / "en_US-old-medium-0123abcd-ffff.onnx"
    unrecorded_new = cache / "en_US-old-medium-0123abcd-eeee.onnx"
    stale_partial = cache / f"{mine[0].name}.123.456.partial"
    fresh_partial = cache / f"{mine[0].name}.789.456.partial"
    for path in (unrecorded_old, unrecorded_new, stale_partial, fresh_partial):
        path.write_bytes(b"x")
    _aged(unrecorded_old, UNUSED_S + 60)
    _aged(stale_partial, PARTIAL_UNUSED_S + 60)
    shutil.rmtree(gone.parent)

    with caplog.at_level(logging.INFO, logger="integrations.piper.files"):
        removed = prune(cache)

    expected = {*theirs, half_copy, unrecorded_old, stale_partial, records[gone], records[half]}
    assert set(removed) == expected
    assert set(cache.iterdir()) == {*mine, records[here], unrecorded_new, fresh_partial}
    assert "removed 7 file(s)" in caplog.text
    assert prune(cache) == []  # nothing left to prune


def test_a_file_in_use_is_marked_so(tmp_path: Path) -> None:
    path = _aged(_made(tmp_path, _model(tmp_path / "v"), ""), UNUSED_S + 60)
    used(path)
    assert time.time() - path.stat().st_mtime < 60
    assert prune(tmp_path) == []  # its record-less file was just used


def test_a_folder_that_cannot_be_read_prunes_nothing(tmp_path: Path) -> None:
    assert prune(tmp_path / "missing") == []


def test_loading_a_voice_from_a_new_path_removes_the_copy_of_the_path_that_is_gone(
    tmp_path: Path,
) -> None:
    """A virtual environment made again: the built-in voice at a new path. Its first load
    writes its own copy, and the copy of the path that is gone goes."""
    source = builtin_model_path()
    before = tmp_path / "venv-before" / source.name
    before.parent.mkdir()
    shutil.copy2(source, before)
    shutil.copy2(config_path_of(source), config_path_of(before))
    cache = tmp_path / "cache"
    open_voice(before, config_path_of(before), cache)
    old_copy = cache / optimized_name(before)[0]
    assert old_copy.is_file()
    shutil.rmtree(before.parent)

    open_voice(source, config_path_of(source), cache)

    assert not old_copy.exists()
    assert (cache / optimized_name(source)[0]).is_file()
    assert [p.read_text() for p in cache.glob("*.source")] == [str(source.resolve())]
