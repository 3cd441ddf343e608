"""Piper's engine, imported with the first model (onnxruntime and numpy take ~0.2 s to import,
which ``oyez voices`` and ``--help`` need not pay).

A voice is opened as ``PiperVoice.load`` does on the CPU (piper-tts 1.8), except that its
inference session shrinks onnxruntime's memory arena after long runs
(``memory.enable_memory_arena_shrinkage``) and its threads stop spinning when a run ends
(``session.force_spinning_stop``); a text is synthesized piece by piece, and glibc's
allocator returns the freed pages (``malloc_trim``) after each long piece and once no synthesis
has run for :data:`TRIM_IDLE_S`. ``bench/memory.py`` measures it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar

import onnxruntime
from piper import AudioChunk, PiperConfig, PiperVoice, SynthesisConfig

from bot.synthesis.sentences import split_pieces

from .files import read_again, versioned_name, written
from .vocoder import VocoderStream, split_model_apart

__all__ = [
    "SHRINK_ABOVE_IDS",
    "open_stream",
    "open_voice",
    "optimized_name",
    "stream_pieces",
    "synthesize_pieces",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")


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
#: Seconds without a synthesis after which the freed heap goes back to the system. Trimming
#: after every piece made the next one ~8 ms (9 %) slower, its pages faulted in again; after a
#: pause, nobody waits on that.
TRIM_IDLE_S = 1.0
#: A piece longer than this (characters) has the heap it grew trimmed at once, as a long text's
#: pieces would otherwise pile their peaks up (+120 MiB over 30 long texts); its synthesis is
#: long enough that the next one's page faults cost it little.
TRIM_AFTER_CHARS = 100
#: A run of more phoneme ids than this (about 70 characters) gives back the arena memory it grew
#: when it ends; shorter ones, most sentences, keep it: shrinking costs ~25 % more CPU per run.
SHRINK_ABOVE_IDS = 150
#: What the optimized copy of a model is made at (see :func:`open_voice`).
_CACHED_LEVEL = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
#: onnxruntime's session option (``onnxruntime_session_options_config_keys.h``,
#: ``kOrtSessionOptionsConfigForceSpinningStop``).
_FORCE_SPINNING_STOP = "session.force_spinning_stop"
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


def optimized_name(model_path: Path) -> tuple[str, str]:
    """(file name of ``model_path``'s optimized copy, the prefix every copy of it shares): the
    copy's name changes with the model's size and modification time and onnxruntime's version,
    so a changed model or a new onnxruntime never reads a stale copy."""
    name, prefix = versioned_name(model_path, "", f"{onnxruntime.__version__}/{_CACHED_LEVEL}")
    return f"{name}.onnx", prefix


def _session(
    path: Path, level: Any, save_to: Path | None = None, threads: int = 0
) -> _ShrinkingSession:
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = level
    # the thread pool stops spinning when a run ends (it still spins within one): the loudness
    # pass that follows each sentence then has the CPU (2.4 instead of 4.3 ms on 2 cores)
    options.add_session_config_entry(_FORCE_SPINNING_STOP, "1")
    options.intra_op_num_threads = threads  # 0: onnxruntime's default, one per core
    if save_to is not None:
        options.optimized_model_filepath = str(save_to)
    return _ShrinkingSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _cached_session(
    model_path: Path, cache_dir: Path, copying: AbstractContextManager[Any], threads: int
) -> _ShrinkingSession:
    name, prefix = optimized_name(model_path)
    cached = cache_dir / name
    if cached.is_file():
        try:
            session = _session(
                cached, onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL, threads=threads
            )
        except Exception as exc:  # onnxruntime's own errors (InvalidProtobuf, Fail…)
            log.warning("optimized copy %s of a Piper voice is unusable (%s); rebuilt", cached, exc)
            cached.unlink(missing_ok=True)
        else:
            read_again(cache_dir, model_path, cached)
            return session
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.debug("no optimized copy of %s: %s", model_path, exc)
        return _session(
            model_path, onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL, threads=threads
        )
    partial = cache_dir / f"{name}.{os.getpid()}.{threading.get_ident()}.partial"
    try:
        with copying:
            session = _session(model_path, _CACHED_LEVEL, save_to=partial, threads=threads)
            partial.replace(cached)  # atomic: a concurrent reader sees the whole copy or none
    except Exception as exc:  # no room for the copy, say: the model is still read as it is
        partial.unlink(missing_ok=True)
        log.debug("no optimized copy of %s: %s", model_path, exc)
        return _session(
            model_path, onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL, threads=threads
        )
    for stale in cache_dir.glob(f"{prefix}*.onnx"):  # copies of the model before it changed
        if stale != cached:
            stale.unlink(missing_ok=True)
    written(cache_dir, model_path)
    return session


def open_voice(
    model_path: Path,
    config_path: Path,
    cache_dir: Path | None = None,
    copying: AbstractContextManager[Any] | None = None,
    *,
    threads: int = 0,
) -> PiperVoice:
    """What ``PiperVoice.load`` does on the CPU (piper-tts 1.8), with a shrinking session.

    With ``cache_dir``, the session is built from an optimized copy of the model kept there
    (onnxruntime's ``optimized_model_filepath``, made at ``ORT_ENABLE_EXTENDED``: the
    hardware-independent optimizations, so a copy moved to another CPU still runs) and read with
    the graph optimizations off: ~0.1 s less per cold load, the same audio. The first load
    writes the copy (as big as the model); a copy that onnxruntime cannot read is removed and
    rebuilt; a folder that cannot be written means no copy. ``copying`` is held while a copy
    is written (:data:`integrations.piper.models.COPYING`). ``threads``: onnxruntime's intra-op
    threads (``SessionOptions.intra_op_num_threads``; 0: its default, one per core; 1 in a
    synth process: one Piper per core). Raises ``OSError`` and onnxruntime's
    errors for a model that cannot be read.
    """
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if cache_dir is None:
        session = _session(
            model_path, onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL, threads=threads
        )
    else:
        copy_lock = copying or contextlib.nullcontext()
        session = _cached_session(model_path, cache_dir, copy_lock, threads)
    return PiperVoice(session=session, config=PiperConfig.from_dict(config))


def open_stream(
    voice: PiperVoice,
    model_path: Path,
    cache_dir: Path,
    copying: AbstractContextManager[Any],
    threads: int = 0,
) -> VocoderStream | None:
    """``voice`` (loaded from ``model_path``) split at its vocoder (in a process of its own:
    :func:`vocoder.split_model_apart`, the halves kept in ``cache_dir``) and opened as a
    :class:`VocoderStream`, each half from an optimized copy as :func:`open_voice` does; None
    for a graph that does not split. Raises ``OSError``, onnx's and onnxruntime's errors."""
    halves = split_model_apart(model_path, cache_dir, copying)
    if halves is None:
        return None
    latent, vocoder = (_cached_session(half, cache_dir, copying, threads) for half in halves)
    return VocoderStream(voice, latent, vocoder)


class IdleTrim:
    """Calls ``trim`` once no synthesis has run for ``idle_s`` seconds, from one thread of its
    own (started with the first synthesis, a daemon); never while one runs. Thread-safe:
    syntheses run in worker threads.

    A synthesis's end only notes the time: the thread sleeps until the idle time is up and
    looks again. A timer thread started at each end (and cancelled at the next start) cost
    ~0.3 ms between Piper's last samples and their delivery, and a wake-up beside the next
    synthesis's start."""

    def __init__(self, trim: Callable[[], object], idle_s: float = TRIM_IDLE_S) -> None:
        self.trim = trim
        self.idle_s = idle_s
        self.trims = 0
        self._cond = threading.Condition()
        self._running = 0
        self._ended: float | None = None  # when the last synthesis ended, None: trimmed since
        self._thread: threading.Thread | None = None
        self._asleep = False  # the thread waits for a synthesis, with no time out

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Around one synthesis: a pending trim waits for it, and for ``idle_s`` after it."""
        with self._cond:
            self._running += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="oyez-piper-trim", daemon=True
                )
                self._thread.start()
            elif self._asleep:
                self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self._ended = time.monotonic()

    def _serve(self) -> None:
        with self._cond:
            while True:
                if self._running == 0 and self._ended is None:  # nothing to give back
                    self._asleep = True
                    self._cond.wait()
                    self._asleep = False
                    continue
                if self._running:
                    self._cond.wait(self.idle_s)  # one runs: look again once it could be over
                    continue
                assert self._ended is not None  # none runs, and one ended since the last trim
                idle_s = time.monotonic() - self._ended
                if idle_s < self.idle_s:
                    self._cond.wait(self.idle_s - idle_s)
                    continue
                self._ended = None
                self.trims += 1
                self.trim()  # holding the lock: a synthesis that begins now waits for it


_IDLE_TRIM = IdleTrim(_TRIM) if _TRIM is not None else None


def synthesize_pieces(
    model: PiperVoice, text: str, config: SynthesisConfig, max_chars: int = 200
) -> Iterator[AudioChunk]:
    """Piper's chunks (one per sentence) of ``text`` synthesized piece by piece; blocking."""
    return _by_pieces(functools.partial(model.synthesize, syn_config=config), text, max_chars)


def stream_pieces(
    stream: VocoderStream, text: str, config: SynthesisConfig, max_chars: int = 200
) -> Iterator[bytes]:
    """:meth:`VocoderStream.pieces` of ``text``, piece by piece as :func:`synthesize_pieces`
    makes them; blocking."""
    return _by_pieces(functools.partial(stream.pieces, config=config), text, max_chars)


def _by_pieces(make: Callable[[str], Iterable[_T]], text: str, max_chars: int) -> Iterator[_T]:
    """What ``make`` yields for each piece of ``text`` (its sentences, a long one cut at clause
    breaks: :func:`split_pieces`), the heap trimmed after each long piece."""
    if _IDLE_TRIM is None:
        for piece in split_pieces(text, max_chars):
            yield from make(piece)
        return
    with _IDLE_TRIM.running():
        for piece in split_pieces(text, max_chars):
            try:
                yield from make(piece)
            finally:
                if len(piece) > TRIM_AFTER_CHARS:
                    _IDLE_TRIM.trim()
