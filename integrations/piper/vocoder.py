"""A Piper sentence's samples as its vocoder makes them, so its first audio goes out sooner.

A Piper voice is one VITS graph (ONNX): its text encoder, duration predictor and flow make a
latent of 192 channels by frames (one frame per ``hop_length`` samples: 256 for the medium
voices), and its HiFi-GAN vocoder (``dec``) turns the latent into samples. :func:`split_model`
cuts the graph at the vocoder's input (the first input of :data:`VOCODER_NODE`) with
``onnx.utils.Extractor``; :class:`VocoderStream` then makes the latent at once and runs the
vocoder on pieces of it (:data:`FIRST_FRAMES`, then :data:`FRAMES`), each with
:data:`CONTEXT_FRAMES` frames of latent either side that are decoded and dropped. Measured on
``en_US-joe-medium`` (a 39-character sentence, 2.77 s of audio): the whole graph 74.6 ms, the
latent 22.4 ms, the vocoder on the first 40 frames with 16 of context 12.5 ms; over 16 short
sentences the first piece came at 0.51× of the whole graph's time and the last at 1.09×. The
pieces joined are the whole graph's samples to 100 dB SNR.

The samples are not peak-normalised, as Piper's whole sentences are (``normalize_audio``): the
peak is known only at the end. Blocking throughout: run it in the voice's thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .files import read_again, versioned_name, written

if TYPE_CHECKING:
    import onnxruntime
    from piper import PiperVoice, SynthesisConfig

__all__ = [
    "CONTEXT_FRAMES",
    "FIRST_FRAMES",
    "FRAMES",
    "VOCODER_NODE",
    "VocoderStream",
    "split_model",
]

log = logging.getLogger(__name__)

#: The vocoder's first node in Piper's exports (``piper.train.export_onnx``: VITS's ``dec``).
VOCODER_NODE = "/dec/conv_pre/Conv"
#: Latent frames in the first piece (~0.37 s at 22.05 kHz): its samples are the first audio.
FIRST_FRAMES = 32
#: Latent frames in each later piece (~6 s: most sentences' rest in one run). Each vocoder run
#: decodes its context again, so fewer runs cost less: the rest of a sentence is made in a
#: fraction of the time its first piece takes to play.
FRAMES = 512
#: Latent frames either side of a piece that the vocoder sees and whose samples are dropped:
#: with 10 the pieces are the whole sentence's samples (100 dB SNR on ``en_US-joe-medium``;
#: with 8, 59 dB, off by up to 138 of 32767 next to the cut).
CONTEXT_FRAMES = 10
#: int16 full scale, as Piper converts (``piper.voice.AudioChunk.audio_int16_array``).
_FULL_SCALE = 32767.0


@dataclass(frozen=True, slots=True)
class _Halves:
    """Where a model's two halves are kept: named after its path, size and modification time
    and onnx's version (read from its metadata: importing onnx holds the interpreter for
    ~0.5 s); ``name`` starts both, ``prefix`` every version of them."""

    latent: Path
    vocoder: Path
    name: str
    prefix: str

    @classmethod
    def of(cls, model_path: Path, cache_dir: Path) -> _Halves:
        name, prefix = versioned_name(model_path, "split-", metadata.version("onnx"))
        latent, vocoder = (cache_dir / f"{name}.{half}.onnx" for half in ("latent", "vocoder"))
        return cls(latent, vocoder, name, prefix)

    @property
    def paths(self) -> tuple[Path, Path]:
        return self.latent, self.vocoder

    def made(self) -> bool:
        return self.latent.is_file() and self.vocoder.is_file()


def split_model(
    model_path: Path, cache_dir: Path, copying: AbstractContextManager[Any]
) -> tuple[Path, Path] | None:
    """``model_path`` cut at its vocoder's input: (the latent half, the vocoder half), two
    ``.onnx`` files in ``cache_dir`` made once (~3 s) and kept, named after the model's path,
    size and modification time and onnx's version (older ones removed). None for a graph without
    :data:`VOCODER_NODE` (not a Piper VITS export). ``copying`` is held while files are written
    (:data:`integrations.piper.models.COPYING`). Blocking. Raises ``OSError`` and onnx's
    errors."""
    halves = _Halves.of(model_path, cache_dir)
    if halves.made():
        read_again(cache_dir, model_path, *halves.paths)
        return halves.paths
    import onnx
    from onnx.utils import Extractor

    model = onnx.load(str(model_path))
    node = next((n for n in model.graph.node if n.name == VOCODER_NODE), None)
    if node is None:
        log.info("Piper voice %s has no %s: its sentences are made whole", model_path, VOCODER_NODE)
        return None
    inputs = [i.name for i in model.graph.input]
    extractor = Extractor(model)
    latent = extractor.extract_model(inputs, [node.input[0]])
    # a multi-speaker vocoder takes the speaker's embedding too (VITS's g), made from sid
    vocoder = extractor.extract_model(
        [node.input[0], *(["sid"] if "sid" in inputs else [])], [o.name for o in model.graph.output]
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}.{threading.get_ident()}.partial"
    with copying:
        for half, path in ((latent, halves.latent), (vocoder, halves.vocoder)):
            partial = path.with_name(f"{path.name}.{tag}")
            try:
                onnx.save(half, str(partial))
                partial.replace(path)  # atomic: a concurrent reader sees the whole file or none
            finally:
                partial.unlink(missing_ok=True)
    for stale in cache_dir.glob(f"{halves.prefix}*.onnx"):
        if not stale.name.startswith(halves.name):
            stale.unlink(missing_ok=True)
    written(cache_dir, model_path)
    return halves.paths


#: The exit status of ``python -m integrations.piper.vocoder`` for a graph that does not split.
_NO_SPLIT = 3


def split_model_apart(
    model_path: Path, cache_dir: Path, copying: AbstractContextManager[Any]
) -> tuple[Path, Path] | None:
    """:func:`split_model` in a process of its own when the halves are not made yet: onnx
    holds the interpreter's lock while it reads and writes a model (the event loop stalled
    ~0.6 s beside it in a thread). Blocking. Raises ``OSError`` naming what went wrong."""
    halves = _Halves.of(model_path, cache_dir)
    if halves.made():
        read_again(cache_dir, model_path, *halves.paths)
        return halves.paths
    command = [sys.executable, "-m", __name__, str(model_path), str(cache_dir)]
    with copying:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode == _NO_SPLIT:
        return None
    if done.returncode != 0 or not halves.made():
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        raise OSError(f"splitting {model_path.name} at its vocoder failed: {tail[0]}")
    return halves.paths


class VocoderStream:
    """One voice's two halves (:func:`split_model`), as sessions, beside its :class:`PiperVoice`
    (whose phonemizer and configuration it uses)."""

    def __init__(
        self,
        voice: PiperVoice,
        latent: onnxruntime.InferenceSession,
        vocoder: onnxruntime.InferenceSession,
    ) -> None:
        self.voice = voice
        self.latent = latent
        self.vocoder = vocoder
        self._latent_input = vocoder.get_inputs()[0].name
        self._speakers = any(i.name == "sid" for i in vocoder.get_inputs())

    def _inputs(self, ids: list[int], config: SynthesisConfig) -> dict[str, np.ndarray[Any, Any]]:
        """The graph's inputs, as ``PiperVoice.phoneme_ids_to_audio`` makes them (piper-tts
        1.3+): the config's scales, else the voice's own; a multi-speaker voice's ``sid``."""
        own = self.voice.config
        scales = [
            own.noise_scale if config.noise_scale is None else config.noise_scale,
            own.length_scale if config.length_scale is None else config.length_scale,
            own.noise_w_scale if config.noise_w_scale is None else config.noise_w_scale,
        ]
        feed: dict[str, np.ndarray[Any, Any]] = {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": np.array(scales, dtype=np.float32),
        }
        if own.num_speakers > 1:
            speaker = config.speaker_id
            feed["sid"] = np.array(
                [own.default_speaker_id if speaker is None else speaker], dtype=np.int64
            )
        return feed

    def pieces(self, text: str, config: SynthesisConfig) -> Iterator[bytes]:
        """``text``'s samples (PCM s16le, mono, the voice's rate) in pieces, each as soon as the
        vocoder made it: the first :data:`FIRST_FRAMES` frames of each sentence, then
        :data:`FRAMES` at a time."""
        hop = self.voice.config.hop_length
        for phonemes in self.voice.phonemize(text):
            if not phonemes:
                continue
            feed = self._inputs(self.voice.phonemes_to_ids(phonemes), config)
            latent = self.latent.run(None, feed)[0]
            frames = int(latent.shape[2])
            start, size = 0, FIRST_FRAMES
            while start < frames:
                end = min(frames, start + size)
                low, high = max(0, start - CONTEXT_FRAMES), min(frames, end + CONTEXT_FRAMES)
                inputs = {self._latent_input: latent[:, :, low:high]}
                if self._speakers:
                    inputs["sid"] = feed["sid"]
                audio = self.vocoder.run(None, inputs)[0].reshape(-1)
                kept = audio[(start - low) * hop : (end - low) * hop]
                yield np.clip(kept * _FULL_SCALE, -_FULL_SCALE, _FULL_SCALE).astype("<i2").tobytes()
                start, size = end, FRAMES


if __name__ == "__main__":  # split_model_apart's process: MODEL CACHE_DIR
    made = split_model(Path(sys.argv[1]), Path(sys.argv[2]), contextlib.nullcontext())
    sys.exit(_NO_SPLIT if made is None else 0)
