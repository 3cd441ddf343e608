"""Piper split at its vocoder (integrations.piper.vocoder): the pieces are the whole sentence's
samples, the first comes after a short vocoder run, the halves are made once and remade for a
changed model, and a graph that is not a Piper export does not split."""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from piper import SynthesisConfig

from integrations.piper import vocoder
from integrations.piper.engine import open_stream, open_voice, stream_pieces, synthesize_pieces
from integrations.piper.models import builtin_model_path, config_path_of
from integrations.piper.vocoder import (
    FIRST_FRAMES,
    VocoderStream,
    split_model,
    split_model_apart,
)

#: The same take every time, and Piper's whole sentence not peak-normalised, as the pieces are.
SAME_TAKE = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, normalize_audio=False)
SENTENCE = "The washing machine has finished, and the towels can go on the line."


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> tuple[VocoderStream, Path]:
    """The built-in voice split once for the module (~3 s), and the folder of its halves."""
    model = builtin_model_path()
    cache = tmp_path_factory.mktemp("halves")
    voice = open_voice(model, config_path_of(model))
    stream = open_stream(voice, model, cache, contextlib.nullcontext())
    assert stream is not None
    return stream, cache


def plain_model(path: Path) -> Path:
    """An ONNX graph that is not a Piper export (one Identity node), saved at ``path``."""
    node = helper.make_node("Identity", ["input"], ["output"], name="/just/Identity")
    graph = helper.make_graph(
        [node],
        "plain",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1])],
    )
    onnx.save(helper.make_model(graph), str(path))
    return path


def whole(stream: VocoderStream, text: str) -> np.ndarray:
    chunks = stream.voice.synthesize(text, SAME_TAKE)
    return np.concatenate([c.audio_int16_array for c in chunks]).astype(np.int32)


@pytest.mark.parametrize("frames", [vocoder.FRAMES, 40])
def test_the_pieces_are_the_whole_sentences_samples(
    split: tuple[VocoderStream, Path], frames: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream, _ = split
    monkeypatch.setattr(vocoder, "FRAMES", frames)
    pieces = list(stream.pieces(SENTENCE, SAME_TAKE))
    hop = stream.voice.config.hop_length
    assert len(pieces[0]) == FIRST_FRAMES * hop * 2  # bytes: the first piece is short
    assert all(len(p) <= frames * hop * 2 for p in pieces[1:])
    assert len(pieces) >= (2 if frames > 100 else 5)  # the first 32 frames, then the rest
    joined = np.frombuffer(b"".join(pieces), "<i2").astype(np.int32)
    reference = whole(stream, SENTENCE)
    assert joined.shape == reference.shape
    # the vocoder's context is wider than its receptive field: the same samples, but rounding
    assert int(np.max(np.abs(joined - reference))) <= 2


def test_a_long_text_is_made_piece_by_piece_as_whole_sentences_are(
    split: tuple[VocoderStream, Path],
) -> None:
    stream, _ = split
    text = f"{SENTENCE} Then the dryer starts. " * 3
    streamed = np.frombuffer(b"".join(stream_pieces(stream, text, SAME_TAKE, 60)), "<i2")
    made = synthesize_pieces(stream.voice, text, SAME_TAKE, 60)
    reference = np.concatenate([c.audio_int16_array for c in made])
    assert streamed.shape == reference.shape  # the same pieces, the same sentences
    assert int(np.max(np.abs(streamed.astype(np.int32) - reference))) <= 2


def test_the_first_piece_comes_well_before_the_whole_sentence(
    split: tuple[VocoderStream, Path],
) -> None:
    stream, _ = split
    firsts, wholes = [], []
    for _ in range(5):
        started = time.perf_counter()
        pieces = stream.pieces(SENTENCE, SAME_TAKE)
        next(pieces)
        firsts.append(time.perf_counter() - started)
        list(pieces)
        started = time.perf_counter()
        whole(stream, SENTENCE)
        wholes.append(time.perf_counter() - started)
    # the latent (~30 % of the whole) and a vocoder run on 32 + 10 frames: ~0.5 of the whole
    assert min(firsts) < 0.75 * min(wholes)


def test_the_halves_are_made_once_and_remade_for_a_changed_model(tmp_path: Path) -> None:
    source = builtin_model_path()
    model = tmp_path / "voices" / source.name
    model.parent.mkdir()
    shutil.copy2(source, model)
    cache = tmp_path / "cache"
    halves = split_model(model, cache, contextlib.nullcontext())
    assert halves is not None
    made = [h.stat().st_ino for h in halves]
    assert split_model(model, cache, contextlib.nullcontext()) == halves
    assert [h.stat().st_ino for h in halves] == made  # read, not made again (new files replace)
    model.touch()  # the model changed: new halves, the old ones gone
    again = split_model(model, cache, contextlib.nullcontext())
    assert again is not None and again != halves
    assert sorted(cache.glob("*.onnx")) == sorted(again)


def test_a_graph_that_is_not_a_piper_export_does_not_split(tmp_path: Path) -> None:
    model = plain_model(tmp_path / "plain.onnx")
    assert split_model(model, tmp_path / "cache", contextlib.nullcontext()) is None
    assert not (tmp_path / "cache").exists()


def test_a_split_is_made_in_a_process_of_its_own_which_says_why_it_failed(
    tmp_path: Path,
) -> None:
    plain = plain_model(tmp_path / "plain.onnx")
    assert split_model_apart(plain, tmp_path / "cache", contextlib.nullcontext()) is None
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model at all")
    with pytest.raises(OSError, match=r"splitting broken\.onnx at its vocoder failed: \w+"):
        split_model_apart(broken, tmp_path / "cache", contextlib.nullcontext())
