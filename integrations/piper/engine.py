"""Piper's engine, imported with the first model (onnxruntime and numpy take ~0.2 s to import,
which ``oyez voices`` and ``--help`` need not pay).

A voice is opened as ``PiperVoice.load`` does on the CPU (piper-tts 1.8), except that its
inference session shrinks onnxruntime's memory arena after long runs
(``memory.enable_memory_arena_shrinkage``); a text is synthesized piece by piece and glibc's
allocator returns the freed pages after each (``malloc_trim``). ``bench/memory.py`` measures it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import onnxruntime
from piper import AudioChunk, PiperConfig, PiperVoice, SynthesisConfig

from bot.synthesis.sentences import split_pieces

__all__ = ["SHRINK_ABOVE_IDS", "open_voice", "synthesize_pieces"]


def _malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)`` (returns freed heap pages to the system), None elsewhere
    (musl, macOS): there the allocator keeps what the arena shrinkage freed."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
    return functools.partial(trim, 0) if trim is not None else None


_TRIM = _malloc_trim()
#: A run of more phoneme ids than this (about 70 characters) gives back the arena memory it grew
#: when it ends; shorter ones, most sentences, keep it: shrinking costs ~25 % more CPU per run.
SHRINK_ABOVE_IDS = 150
#: The run option that does it ("cpu:0": the CPU arena).
_SHRINK = onnxruntime.RunOptions()
_SHRINK.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")


class _ShrinkingSession(onnxruntime.InferenceSession):  # type: ignore[misc]  # untyped
    """An inference session whose long runs shrink its arena back when they end (piper-tts
    calls ``session.run(None, inputs)`` and takes no run options of its own)."""

    def run(self, output_names: Any, input_feed: Any, run_options: Any = None) -> Any:
        lengths = input_feed.get("input_lengths") if isinstance(input_feed, dict) else None
        if run_options is None and lengths is not None and int(lengths[0]) > SHRINK_ABOVE_IDS:
            run_options = _SHRINK
        return super().run(output_names, input_feed, run_options)


def open_voice(model_path: Path, config_path: Path) -> PiperVoice:
    """What ``PiperVoice.load`` does on the CPU (piper-tts 1.8), with a shrinking session."""
    config = json.loads(config_path.read_text(encoding="utf-8"))
    session = _ShrinkingSession(
        str(model_path),
        sess_options=onnxruntime.SessionOptions(),
        providers=["CPUExecutionProvider"],
    )
    return PiperVoice(session=session, config=PiperConfig.from_dict(config))


def synthesize_pieces(
    model: PiperVoice, text: str, config: SynthesisConfig, max_chars: int = 200
) -> Iterator[AudioChunk]:
    """Piper's chunks (one per sentence) of ``text`` synthesized piece by piece; blocking."""
    for piece in split_pieces(text, max_chars):
        try:
            yield from model.synthesize(piece, config)
        finally:
            if _TRIM is not None:
                _TRIM()
