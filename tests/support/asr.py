"""Listening tests: an offline English speech recogniser, Moonshine (base, English).

The model is the one the ``moonshine-cpp`` package ships (ONNX Runtime ``.ort`` files and its
tokenizer). The package's own native library is built for CPUs with AVX-512 and dies with SIGILL
on the others (including our 2-core CI machines), so this module runs the same model files with
the ``onnxruntime`` Python package instead: encoder once, then greedy decoding with the merged
decoder and its key/value cache. Importing ``moonshine_cpp`` itself is avoided on purpose: it loads
that native library (and a second onnxruntime) into the process.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bot.audio.transcode import find_ffmpeg

__all__ = ["Transcriber", "model_dir", "word_error_rate", "words"]

SAMPLE_RATE = 16_000
_START, _END = 1, 2  # <s>, </s> in Moonshine's tokenizer
_LAYERS, _HEADS, _HEAD_DIM = 8, 8, 52  # moonshine base, from the decoder's input shapes


def model_dir() -> Path:
    spec = importlib.util.find_spec("moonshine_cpp")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("moonshine-cpp is not installed (it is in the test extra)")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / "base-en"


def _read_tokenizer(path: Path) -> list[bytes]:
    """tokenizer.bin: per token, a length (one byte, or two when the first has bit 7) then bytes."""
    data, tokens, i = path.read_bytes(), [], 0
    while i < len(data):
        n = data[i]
        i += 1
        if n >= 0x80:
            n = (n & 0x7F) | (data[i] << 7)
            i += 1
        tokens.append(data[i : i + n])
        i += n
    return tokens


class Transcriber:
    def __init__(self) -> None:
        directory = model_dir()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        cpu = ["CPUExecutionProvider"]
        self._encoder = ort.InferenceSession(str(directory / "encoder_model.ort"), options, cpu)
        self._decoder = ort.InferenceSession(
            str(directory / "decoder_model_merged.ort"), options, cpu
        )
        self._outputs = [o.name for o in self._decoder.get_outputs()]
        self._tokens = _read_tokenizer(directory / "tokenizer.bin")

    def transcribe_samples(self, samples: np.ndarray) -> str:
        """``samples``: float32 mono at 16 kHz in [-1, 1].

        Half a second of silence goes before and after: speech that starts at the very first
        sample makes the model invent a leading token now and then ("10. The quick…"); with the
        pad, 30 Piper takes of one sentence gave 2 misheard words instead of 6.
        """
        pad = np.zeros(SAMPLE_RATE // 2, np.float32)
        audio = np.concatenate([pad, np.asarray(samples, dtype=np.float32).ravel(), pad])[None, :]
        hidden = self._encoder.run(None, {"input_values": audio})[0]
        empty = np.zeros((1, _HEADS, 0, _HEAD_DIM), np.float32)
        past = {
            f"past_key_values.{layer}.{part}.{kv}": empty
            for layer in range(_LAYERS)
            for part in ("decoder", "encoder")
            for kv in ("key", "value")
        }
        ids = [_START]
        # Moonshine emits at most ~6.5 tokens per second of speech.
        for step in range(int(audio.shape[1] / SAMPLE_RATE * 6.5) + 10):
            feed = {
                "input_ids": np.array([[ids[-1]]], np.int64),
                "encoder_hidden_states": hidden,
                "use_cache_branch": np.array([step > 0]),
                **past,
            }
            logits, *present = self._decoder.run(None, feed)
            for name, value in zip(self._outputs[1:], present, strict=True):
                if step > 0 and ".encoder." in name:
                    continue  # the cross-attention cache is computed once, at step 0
                past[name.replace("present", "past_key_values")] = value
            token = int(np.argmax(logits[0, -1]))
            if token == _END:
                break
            ids.append(token)
        text = b"".join(self._tokens[i] for i in ids[1:]).decode("utf-8", "replace")
        return text.replace("\u2581", " ").strip()

    def transcribe(self, audio: bytes) -> str:
        """Any audio ffmpeg can decode (Ogg Opus, MP3, WAV…)."""
        return self.transcribe_samples(decode(audio, SAMPLE_RATE))


def decode(audio: bytes, sample_rate: int, channels: int = 1) -> np.ndarray:
    """Decode with ffmpeg to float32 samples (interleaved when ``channels`` > 1)."""
    result = subprocess.run(
        [find_ffmpeg(), "-hide_banner", "-loglevel", "error", "-i", "pipe:0"]
        + ["-f", "f32le", "-ac", str(channels), "-ar", str(sample_rate), "pipe:1"],
        input=audio,
        capture_output=True,
        check=True,
        timeout=60,
    )
    return np.frombuffer(result.stdout, dtype=np.float32)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower().replace("-", " "))


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / words in ``reference``.

    A word written as two ("some one" for "someone") or two written as one counts as no error:
    that is how the recogniser spells, not what it heard.
    """
    ref, hyp = words(reference), words(hypothesis)
    cost = [
        [i + j if i == 0 or j == 0 else 0 for j in range(len(hyp) + 1)] for i in range(len(ref) + 1)
    ]
    for i in range(1, len(ref) + 1):
        for j in range(1, len(hyp) + 1):
            best = min(
                cost[i - 1][j] + 1,
                cost[i][j - 1] + 1,
                cost[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]),
            )
            if j >= 2 and hyp[j - 2] + hyp[j - 1] == ref[i - 1]:
                best = min(best, cost[i - 1][j - 2])
            if i >= 2 and ref[i - 2] + ref[i - 1] == hyp[j - 1]:
                best = min(best, cost[i - 2][j - 1])
            cost[i][j] = best
    return cost[-1][-1] / max(len(ref), 1)
