"""The ``oyez`` command.

Exit status: 0 done, 2 bad input or configuration (the message on stderr names the problem),
1 any other failure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import stat
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from bot.errors import ConfigError, InvalidRequest, OyezError
from bot.schedules.cli import add_schedule_parser

# Start-up: `oyez --help` imports only the standard library and bot.errors; each command imports
# what it uses when it runs (pydantic, the pipeline, a provider's engine), so a command pays for
# its own parts only. tests/test_cli_startup.py holds that line.
if TYPE_CHECKING:
    from bot.ops.config import Settings
    from bot.providers.preload import HeadStart
    from bot.speech import OutputProfile, Utterance, Voice
    from bot.synthesis.pipeline import SpeechPipeline

__all__ = ["main"]

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2
DEFAULT_OUTPUT = Path("announcement.ogg")
#: ``--format``: the values of :class:`bot.speech.OutputProfile`, written out so that building the
#: parser imports no pydantic (tests/test_cli_startup.py checks they are the same).
FORMATS = ("discord", "mp3", "wav")

log = logging.getLogger("oyez")


class UsageError(InvalidRequest):
    """A command-line argument is wrong."""


def _option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE``; VALUE is read as JSON when it is a number, true/false or null."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"--option {text!r} must look like KEY=VALUE")
    value: Any = raw
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = raw
    if parsed is None or isinstance(parsed, bool | int | float):
        value = parsed
    return key.strip(), value


class _VersionAction(argparse.Action):
    """``--version``, reading the installed version only when it is asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from bot import __version__

        print(f"oyez {__version__}")
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oyez", description="Oyez: text to speech for Discord voice and smart speakers."
    )
    parser.add_argument("--version", action=_VersionAction, help="show the version and exit")
    parser.add_argument(
        "--config", type=Path, help="YAML configuration file (default: $OYEZ_CONFIG, ./oyez.yaml)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    say = commands.add_parser("say", help="speak TEXT into an audio file")
    say.add_argument("text", metavar="TEXT", help="what to say; - reads standard input")
    say.add_argument("--provider", help="TTS provider (default: default_provider, piper)")
    say.add_argument("--model", help="provider model")
    say.add_argument("--voice", help="voice id or name (see: oyez voices)")
    say.add_argument(
        "--option",
        action="append",
        type=_option,
        default=[],
        metavar="KEY=VALUE",
        help="provider option, e.g. length_scale=1.2 (repeatable)",
    )
    say.add_argument(
        "--speed",
        type=float,
        help="speaking rate, 0.5 to 2 (1 normal), for whichever provider speaks; "
        "ignored by one without a rate option",
    )
    say.add_argument(
        "--format",
        choices=FORMATS,
        help="output profile (default: from the extension of -o; .ogg is discord)",
    )
    say.add_argument("--no-cache", action="store_true", help="neither use nor fill the audio cache")
    say.add_argument(
        "--no-fallback",
        action="store_true",
        help="fail instead of letting the fallback chain speak when the provider cannot",
    )
    say.add_argument(
        "-o",
        "--output",
        type=Path,
        help=f"output file, - for standard output (default: {DEFAULT_OUTPUT})",
    )

    run = commands.add_parser(
        "run",
        help="run every configured front end: Discord (discord.token), Home Assistant "
        "(homeassistant.url and token), the HTTP API (http.api_token)",
    )
    run.add_argument(
        "--role",
        action="append",
        metavar="ROLE",
        help="run only these parts: gateway, api, coordinator (or all, the default; repeat it "
        "or separate by commas; overrides run.roles / OYEZ_RUN__ROLES); needs engine.url",
    )

    credits = commands.add_parser(
        "credits", help="credits, spend, budgets, rate limits and credit circuits per provider"
    )
    credits.add_argument("--provider", help="only this provider")
    credits.add_argument(
        "--offline", action="store_true", help="do not ask providers for their balance"
    )

    cache = commands.add_parser("cache", help="the audio cache: stats or clear")
    cache.add_argument("action", choices=["stats", "clear"])

    voices = commands.add_parser("voices", help="list the voices you can use")
    voices.add_argument("--provider", help="only this provider's voices")
    voices.add_argument(
        "--search", help="only voices whose id, name, model or language has this (en-GB, Neural2)"
    )
    voices.add_argument("--json", action="store_true", help="print JSON, one object per voice")
    add_schedule_parser(commands)

    check = commands.add_parser(
        "check-config",
        help="validate the configuration file and the environment, print the effective "
        "configuration with secrets masked; exit 2 naming each problem",
    )
    # SUPPRESS: without --config here, the one given before the command stays.
    check.add_argument(
        "--config", type=Path, default=argparse.SUPPRESS, help="YAML configuration file"
    )
    check.add_argument(
        "--schema", action="store_true", help="print the configuration's JSON Schema instead"
    )
    return parser


def _output_target(args: argparse.Namespace) -> tuple[Path | None, OutputProfile]:
    """Where audio goes (None: standard output) and in which profile."""
    from bot.speech import OutputProfile

    chosen = OutputProfile(args.format) if args.format else None
    if args.output is not None and str(args.output) == "-":
        return None, chosen or OutputProfile.OGG_OPUS
    path: Path = args.output or (
        DEFAULT_OUTPUT.with_suffix(chosen.extension) if chosen else DEFAULT_OUTPUT
    )
    implied = OutputProfile.for_path(path.suffix)
    if chosen is None:
        if implied is None:
            raise UsageError(
                f"cannot tell the format from the extension of {path}: "
                "use .ogg, .opus, .mp3 or .wav, or give --format discord|mp3|wav"
            )
        return path, implied
    if implied is not None and implied is not chosen:
        raise UsageError(
            f"--format {chosen.value} does not match the extension of {path} "
            f"(which means {implied.value})"
        )
    return path, chosen


def _read_text(arg: str) -> str:
    return sys.stdin.read() if arg == "-" else arg


def _describe(utterance: Utterance, target: str, warm_up_s: float | None) -> str:
    voice, profile = utterance.voice, utterance.profile
    t = utterance.timings
    timings = []
    if warm_up_s is not None:
        timings.append(f"model load {warm_up_s:.2f} s")
    timings += [
        f"synthesis {t.synthesis_s:.2f} s",
        f"transcode {t.transcode_s:.2f} s",
        f"total {t.total_s:.2f} s",
    ]
    rtf = t.total_s / utterance.duration_s if utterance.duration_s else 0.0
    language = f", {voice.language}" if voice.language else ""
    loudness = (
        f"{utterance.loudness_lufs:.1f} LUFS" if utterance.loudness_lufs is not None else "n/a"
    )
    lines = [
        f"Said: {utterance.text}",
        f"  voice     {voice.label} ({voice.name}{language})",
    ]
    if utterance.cached:
        lines.append("  cache     from the cache: no provider was called")
    for note in utterance.fallbacks:
        lines.append(f"  instead   of {note.provider}, which did not speak: {note.reason}")
    if utterance.cost_usd is not None:
        lines.append(f"  cost      ${utterance.cost_usd:.4f}")
    return "\n".join(
        [
            *lines,
            f"  output    {target} ({profile.value}: {profile.file_type.description}, "
            f"{utterance.sample_rate} Hz, {utterance.channels} ch, {len(utterance.audio):,} bytes)",
            f"  duration  {utterance.duration_s:.2f} s",
            f"  loudness  {loudness}",
            f"  timings   {', '.join(timings)} (real-time factor {rtf:.3f})",
        ]
    )


@contextlib.asynccontextmanager
async def _speech(settings: Settings) -> AsyncIterator[SpeechPipeline]:
    """A pipeline whose books are the engine's (shared when ``engine.url`` is set), closed with
    the engine after use. Raises :class:`~bot.ops.engine.EngineUnavailable`."""
    from bot.ops.engine import Engine
    from bot.providers.dispatch import Dispatcher
    from bot.synthesis.pipeline import SpeechPipeline

    async with await Engine.open(settings.engine) as engine:
        books = engine.books(settings.data_dir)
        dispatcher = Dispatcher(settings, books, engine.limiter_factory())
        pipeline = SpeechPipeline(settings, dispatcher=dispatcher)
        if not engine.embedded:
            pipeline.flights = engine.flights()
            pipeline.registry.jobs = engine.queued_jobs()
            pipeline.cache_factory = engine.audio_cache
        try:
            yield pipeline
        finally:
            await pipeline.aclose()


async def _say(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from bot.ops.logs import mask_secrets
    from bot.speech import RequestSource, SpeechRequest

    path, profile = _output_target(args)
    request = SpeechRequest.build(
        text=_read_text(args.text),
        provider=args.provider,
        model=args.model,
        voice=args.voice,
        options=dict(args.option),
        speed=args.speed,
        output=profile,
        source=RequestSource.CLI,
        requester="cli",
        fallback=not args.no_fallback,
        cache=not args.no_cache,
    )
    async with _speech(settings) as pipeline:
        prepared = await pipeline.prepare(request)
        warm_up_s: float | None = None
        if not await pipeline.will_hit(prepared):  # a cached utterance needs no model
            started = time.perf_counter()
            # the transcoder's libav is imported while the model loads (cold: ~30 ms saved)
            warming = pipeline.transcoder.warm_up(), prepared.provider.warm_up(prepared.voice)
            await asyncio.gather(*warming)
            warm_up_s = time.perf_counter() - started
        utterance = await pipeline.speak(prepared)
    if path is None:
        sys.stdout.buffer.write(utterance.audio)
        sys.stdout.buffer.flush()
        print(mask_secrets(_describe(utterance, "standard output", warm_up_s)), file=sys.stderr)
        return EXIT_OK
    special = await asyncio.to_thread(write_output, path, utterance.audio)
    # the audio may be on standard output (-o /dev/stdout): then the description is not
    print(
        mask_secrets(_describe(utterance, str(path), warm_up_s)),
        file=sys.stderr if special else sys.stdout,
    )
    return EXIT_OK


def write_output(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path``; returns whether ``path`` is a special file.

    A regular file (or a new one) is replaced atomically: written to ``<name>.partial`` and
    renamed over it. Anything else (``/dev/stdout``, ``/dev/null``, a FIFO, a device) is written
    to itself, never replaced by a regular file. Raises ``OSError``.
    """
    try:
        mode = path.stat().st_mode  # follows /dev/stdout -> /proc/self/fd/1
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        with path.open("wb") as output:
            output.write(data)
        return True
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(path)
    return False


def _voice_line(v: Voice, default: bool, as_json: bool) -> str:
    if as_json:
        fields = {"provider": v.provider, "model": v.model, "id": v.id, "name": v.name}
        return json.dumps({**fields, "language": v.language, "default": default})
    mark = "*" if default else " "
    return f"{mark} {v.provider:<10} {v.model:<24} {v.id:<24} {v.language or '-':<6} {v.name}"


async def _voices(args: argparse.Namespace, settings: Settings) -> int:
    """List voices. A provider that cannot list (no key, unreachable) is reported on stderr; it
    fails the command only when it was asked for by name."""
    from bot.ops.logs import mask_secrets
    from bot.providers.base import ProviderRegistry

    registry = ProviderRegistry.default(settings)  # no pipeline: listing needs no transcoder
    listed = 0
    try:
        names = [args.provider] if args.provider else registry.names()
        for name in names:
            provider = registry.get(name)
            try:
                voices = await provider.list_voices()
            except OyezError as exc:
                if args.provider:
                    raise
                problem = provider.configuration_problem()
                text = f"oyez: {name}: cannot list voices: {problem or exc}"
                print(mask_secrets(text), file=sys.stderr)
                continue
            default = provider.default_voice_id()
            for v in voices:
                if v.matches(args.search or ""):
                    print(_voice_line(v, v.id == default and v.model == voices[0].model, args.json))
                    listed += 1
        for alias, named in sorted(settings.voices.items()):
            if args.provider and named.provider != args.provider:
                continue
            if args.search and args.search.casefold().strip() not in alias:
                continue
            listed += 1
            target = "/".join(p for p in (named.provider, named.model, named.voice) if p)
            if args.json:
                print(json.dumps({"named": alias, "target": target, "options": named.options}))
            else:
                print(f"  {alias:<35} → {target} {named.description or ''}".rstrip())
    finally:
        await registry.aclose()
    if args.search and not listed:
        print(f"oyez: no voice matches {args.search!r}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _with_roles(settings: Settings, roles: list[str] | None) -> Settings:
    """``settings`` with ``oyez run --role``'s roles, when given. Raises :class:`ConfigError`
    naming an unknown role."""
    if not roles:
        return settings
    from pydantic import ValidationError

    from bot.ops.config import RunSettings

    try:
        run = RunSettings(roles=[part for role in roles for part in role.split(",")])
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ConfigError(f"--role: {reason}") from None
    return settings.model_copy(update={"run": run})


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    """Serve until interrupted (Ctrl-C or SIGTERM)."""
    import asyncio
    import signal

    from bot.ops.engine import Engine
    from bot.service import Service

    settings = _with_roles(settings, args.role)

    async with await Engine.open(settings.engine) as engine:
        service = Service(settings, engine=engine)
        try:
            await service.build()
        except ConfigError:
            await service.pipeline.aclose()
            raise
        loop = asyncio.get_running_loop()
        serving = asyncio.ensure_future(service.serve())
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, serving.cancel)
        try:
            await serving
        except asyncio.CancelledError:
            log.info("stopping")
    return EXIT_OK


async def _cache(args: argparse.Namespace, settings: Settings) -> int:
    from bot.synthesis.pipeline import SpeechPipeline

    pipeline = SpeechPipeline(settings)
    try:
        cache = pipeline.cache
        if args.action == "clear":
            print(f"removed {await cache.clear()} cached utterances from {cache.directory}")
            return EXIT_OK
        stats = await cache.stats()
        looked = stats.hits + stats.misses
        rate = f" ({100 * stats.hits / looked:.0f} % hits)" if looked else ""
        print(f"cache     {cache.directory}{'' if settings.cache.enabled else ' (disabled)'}")
        print(f"entries   {stats.entries}")
        print(f"size      {stats.bytes / 1048576:.1f} MiB of {stats.max_bytes / 1048576:.0f} MiB")
        print(f"lookups   {stats.hits} hits, {stats.misses} misses{rate}")
    finally:
        await pipeline.aclose()
    return EXIT_OK


async def _credits(args: argparse.Namespace, settings: Settings) -> int:
    """Per provider: balance, today's spend against budgets, rate limits, credit circuit."""
    from bot.providers.report import credits_report

    async with _speech(settings) as pipeline:
        names = [args.provider] if args.provider else None
        live = not args.offline
        lines = await credits_report(pipeline.registry, pipeline.dispatcher, names, live=live)
        print("\n".join(lines))
    return EXIT_OK


async def _schedule(args: argparse.Namespace, settings: Settings) -> int:
    from bot.schedules.cli import schedule_command

    return await schedule_command(args, settings)


def _head_start(args: argparse.Namespace) -> HeadStart | None:
    """``oyez say``: the model most likely needed starts loading now, in a background thread,
    while the configuration and the pipeline are imported (:mod:`bot.providers.preload`)."""
    if args.command != "say":
        return None
    from bot.providers.preload import head_start

    try:
        return head_start(args.config, args.provider, args.voice, args.model)
    except Exception:  # only a guess: the command goes on without it
        log.debug("no head start", exc_info=True)
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (the console script exits with it)."""
    args = _parser().parse_args(argv)
    loading = _head_start(args)
    try:
        return _main(args)
    finally:
        if loading is not None:  # not left running into the interpreter's shutdown
            loading.join()


def _main(args: argparse.Namespace) -> int:
    import asyncio

    from bot.ops import config as config_module
    from bot.ops.logs import mask_secrets, register_settings_secrets, setup_logging

    setup_logging(logging.INFO if args.verbose else logging.WARNING)
    if args.command == "check-config":  # before load(): it reports what load() would refuse
        from bot.checkconfig import check_config

        return check_config(args.config, schema=args.schema)
    try:
        settings = config_module.load(args.config)
        register_settings_secrets(settings)
        if args.verbose or args.command == "run":  # a service logs at its configured level
            setup_logging(settings.log_level, json_lines=settings.log_format == "json")
        command = {
            "say": _say,
            "voices": _voices,
            "credits": _credits,
            "cache": _cache,
            "run": _run,
            "schedule": _schedule,
        }[args.command]
        return asyncio.run(command(args, settings))
    except (InvalidRequest, ConfigError) as exc:
        print(mask_secrets(f"oyez: error: {exc}"), file=sys.stderr)
        return EXIT_BAD_INPUT
    except OyezError as exc:
        print(mask_secrets(f"oyez: failed: {exc}"), file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        log.debug("unexpected failure", exc_info=True)
        print(mask_secrets(f"oyez: failed: {type(exc).__name__}: {exc}"), file=sys.stderr)
        return EXIT_FAILURE


def run() -> NoReturn:
    """The ``oyez`` command (and ``python -m bot``): :func:`main`, then exit with its status.

    A one-shot ``oyez say`` leaves at once (``os._exit``) instead of tearing the interpreter
    down, which takes ~60 ms with onnxruntime, numpy and libav loaded. It is safe because by
    then everything the command writes is done: the output file was written, closed and renamed
    into place (:func:`write_output`), the pipeline closed its SQLite files and asyncio joined
    its worker threads; the head start, when the model it loads was not needed (a cache hit, a
    wrong guess), is cut off, but only once it writes no file (``HeadStart.settle``); what is
    left are buffers (standard output and error, log handlers), flushed here first. Nothing of
    Oyez registers ``atexit`` work. The other commands (``run`` above all) exit normally.
    """
    args = _parser().parse_args()
    loading = _head_start(args)
    try:
        status = _main(args)
    except BaseException:
        if loading is not None:
            loading.join()
        raise
    if args.command == "say":
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            logging.shutdown()
        except (OSError, ValueError):  # a closed or broken pipe: exit as Python would
            pass
        else:
            if loading is not None:
                loading.settle()
            os._exit(status)
    if loading is not None:
        loading.join()
    raise SystemExit(status)


if __name__ == "__main__":
    run()
