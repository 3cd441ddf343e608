"""The Wyoming server of ``oyez run`` against the ``wyoming`` package's own client, on
127.0.0.1, with the real Piper voice (and Segmind simulated, speaking with Piper too): what
``describe`` lists, PCM that says the text (heard by the recogniser), errors that leave the
connection usable, streamed text spoken sentence by sentence, a cloud voice and its fallback.
"""

from __future__ import annotations

import asyncio
import io
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event, async_read_event
from wyoming.info import Describe, Info
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeVoice,
)
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from bot.errors import ConfigError
from bot.ops import config
from bot.ops.config import Settings
from bot.ops.metrics import REGISTRY
from bot.speech import SpeechRequest
from integrations.wyoming.handler import write_events
from integrations.wyoming.service import SERVICE_TYPE
from integrations.wyoming.settings import WyomingSettings
from tests.fakes.segmind import DEFAULT_API_KEY, FakeSegmind
from tests.fakes.together import DEFAULT_API_KEY as TOGETHER_KEY
from tests.fakes.together import FakeTogether
from tests.support.asr import Transcriber, word_error_rate
from tests.support.homeassistant import free_port
from tests.support.probe import integrated_loudness
from tests.support.speech import piper_pcm
from tests.support.wyoming_peers import heard, running_wyoming

PIPER = "piper/en_US-joe-medium"
ORPHEUS = "segmind/orpheus-3b-0.1/dan"
LONG = (
    "The first train leaves at seven. The second one follows an hour later, "
    "from the same platform. Please keep your tickets ready for inspection."
)


def wyoming_settings(tmp_path: Path, port: int, **more: Any) -> Settings:
    return config.load(
        data_dir=tmp_path / "data",
        http={"host": "127.0.0.1", "port": 0},
        wyoming={"uri": f"tcp://127.0.0.1:{port}"},
        **more,
    )


def client(settings: Settings) -> AsyncTcpClient:
    port = WyomingSettings.from_settings(settings).tcp_port
    assert port is not None
    return AsyncTcpClient("127.0.0.1", port)


async def read_until(
    connection: AsyncTcpClient, last: Callable[[Event], bool], timeout_s: float = 60.0
) -> list[Event]:
    """Events up to and including the first for which ``last`` is true."""
    events: list[Event] = []
    async with asyncio.timeout(timeout_s):
        while True:
            event = await connection.read_event()
            assert event is not None, "the server closed the connection"
            events.append(event)
            if last(event):
                return events


def ends_audio(event: Event) -> bool:
    return event.type in ("audio-stop", "error")


def pcm(events: list[Event]) -> tuple[int, bytes]:
    chunks = [AudioChunk.from_event(e) for e in events if AudioChunk.is_type(e.type)]
    assert chunks, [e.type for e in events]
    assert {(c.width, c.channels) for c in chunks} == {(2, 1)}
    return chunks[0].rate, b"".join(c.audio for c in chunks)


def loudness_of(rate: int, audio: bytes) -> float:
    """Integrated loudness (LUFS) of PCM s16le mono at ``rate`` Hz."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(audio)
    return integrated_loudness(out.getvalue())


def requests_counted(provider: str, outcome: str) -> float:
    labels = {"source": "wyoming", "provider": provider, "outcome": outcome}
    return REGISTRY.get_sample_value("oyez_requests_total", labels) or 0.0


async def describe(connection: AsyncTcpClient) -> Info:
    await connection.write_event(Describe().event())
    (event,) = await read_until(connection, lambda e: Info.is_type(e.type), 5)
    return Info.from_event(event)


async def test_describe_lists_every_voice_with_languages(tmp_path: Path) -> None:
    async with FakeSegmind() as segmind, FakeTogether() as together:
        settings = wyoming_settings(
            tmp_path,
            free_port(),
            providers={
                "segmind": {"api_key": DEFAULT_API_KEY, "base_url": segmind.base_url},
                "together": {"api_key": TOGETHER_KEY, "base_url": together.base_url},
            },
            voices={"Narrator": {"provider": "piper", "voice": "en_US-joe-medium"}},
        )
        async with running_wyoming(settings), client(settings) as connection:
            started = time.perf_counter()
            info = await describe(connection)
            assert time.perf_counter() - started < 0.5  # from memory: Home Assistant waits 1 s
            (program,) = info.tts
            assert program.name == "Oyez"
            assert program.installed
            assert program.supports_synthesize_streaming
            voices = {v.name: v for v in program.voices}
            assert voices[PIPER].languages == ["en_US", "en"]  # listed under each tag there is
            assert voices[ORPHEUS].languages == ["en", "en_US"]
            assert voices[PIPER].description == "Piper — joe (medium)"
            assert voices[ORPHEUS].description == "Segmind Orpheus 3B — dan"
            kokoro = voices["together/hexgrad/Kokoro-82M/af_bella"]
            assert kokoro.description == "Together Kokoro-82M — af_bella"
            assert kokoro.languages == ["en", "en_US"]  # Together names none: default_language
            assert voices["narrator"].languages == ["en_US", "en"]
            assert all(v.languages and v.installed and v.description for v in voices.values())
        assert segmind.requests == []  # listing Segmind's voices costs nothing
        assert {r.path for r in together.requests} == {"/v1/voices"}  # listed, nothing spoken


async def test_synthesize_returns_pcm_that_says_the_text(
    tmp_path: Path, transcriber: Transcriber
) -> None:
    settings = wyoming_settings(tmp_path, free_port())
    counted = requests_counted("piper", "ok")
    async with running_wyoming(settings), client(settings) as connection:
        message = "The washing machine has finished."
        await connection.write_event(Synthesize(message, voice=SynthesizeVoice(name=PIPER)).event())
        events = await read_until(connection, ends_audio)
    assert events[0].type == "audio-start"
    assert events[-1].type == "audio-stop"
    start = AudioStart.from_event(events[0])
    rate, audio = pcm(events)
    # the voice's own rate, as wyoming-piper sends it: nothing resampled here, half the samples
    # for Home Assistant to convert
    assert (start.rate, start.width, start.channels) == (rate, 2, 1) == (22_050, 2, 1)
    assert 1.0 < len(audio) / (2 * rate) < 5.0
    assert loudness_of(rate, audio) == pytest.approx(-16, abs=1.0)  # still normalised
    assert word_error_rate(message, heard(transcriber, rate, audio)) <= 0.2
    assert requests_counted("piper", "ok") == counted + 1


async def test_a_long_text_starts_with_its_first_sentence(
    tmp_path: Path, transcriber: Transcriber
) -> None:
    settings = wyoming_settings(tmp_path, free_port())
    async with running_wyoming(settings), client(settings) as connection:
        await connection.write_event(Synthesize("Warm up.").event())  # Piper's model loads
        await read_until(connection, ends_audio)
        arrivals: list[tuple[float, Event]] = []
        started = time.perf_counter()
        await connection.write_event(Synthesize(LONG).event())
        async with asyncio.timeout(60):
            while not arrivals or not ends_audio(arrivals[-1][1]):
                event = await connection.read_event()
                assert event is not None
                arrivals.append((time.perf_counter() - started, event))
    first_chunk = next(t for t, e in arrivals if AudioChunk.is_type(e.type))
    stop = arrivals[-1][0]
    assert arrivals[-1][1].type == "audio-stop"
    assert first_chunk < 0.5 * stop, (first_chunk, stop)  # the rest was made while it went out
    assert sum(e.type == "audio-start" for _, e in arrivals) == 1
    rate, audio = pcm([e for _, e in arrivals])
    assert word_error_rate(LONG, heard(transcriber, rate, audio)) <= 0.2


async def arrivals_of(connection: AsyncTcpClient, text: str) -> list[tuple[float, Event]]:
    """Each event of ``text``'s answer, with the seconds from ``synthesize`` to its arrival, up
    to ``audio-stop``."""
    arrivals: list[tuple[float, Event]] = []
    started = time.perf_counter()
    await connection.write_event(Synthesize(text, voice=SynthesizeVoice(name=PIPER)).event())
    async with asyncio.timeout(60):
        while not arrivals or not ends_audio(arrivals[-1][1]):
            event = await connection.read_event()
            assert event is not None
            arrivals.append((time.perf_counter() - started, event))
    assert arrivals[-1][1].type == "audio-stop"
    return arrivals


def arrival_of_sample(arrivals: list[tuple[float, Event]], sample: int) -> float:
    """When the chunk holding the ``sample``-th sample (from 0) arrived."""
    seen = 0
    for at, event in arrivals:
        if AudioChunk.is_type(event.type):
            seen += len(AudioChunk.from_event(event).audio) // 2
            if seen > sample:
                return at
    raise AssertionError(f"only {seen} samples came")


@pytest.mark.parametrize("streams", [True, False])
async def test_a_texts_first_sentence_goes_out_as_piper_makes_it_once_its_voice_is_split(
    tmp_path: Path, transcriber: Transcriber, streams: bool
) -> None:
    settings = config.load(
        data_dir=tmp_path / "data",
        http={"host": "127.0.0.1", "port": 0},
        wyoming={"uri": f"tcp://127.0.0.1:{free_port()}", "stream_within_sentence": streams},
        cache={"enabled": False},  # the text's first sentence is said again, not a hit
        providers={"piper": {"noise_scale": 0, "noise_w_scale": 0}},  # the same take each time
    )
    first_sentence = "The courier is at the garden gate."
    text = f"{first_sentence} He will wait outside for two minutes."
    async with running_wyoming(settings) as service, client(settings) as connection:
        piper = service.pipeline.registry.get("piper")
        prepared = await service.pipeline.prepare(SpeechRequest(text="x", provider="piper"))
        if streams:  # the server splits the default voice in the background: wait for it
            assert await piper.prepare_streaming(prepared.voice)
        await arrivals_of(connection, "Warm up. And learn the gain.")
        # a sentence alone is made whole: how many samples the text's first sentence has
        _, alone = pcm([e for _, e in await arrivals_of(connection, first_sentence)])
        arrivals = await arrivals_of(connection, text)
    assert piper.streams_pcm(prepared.job()) is streams
    first = next(at for at, e in arrivals if AudioChunk.is_type(e.type))
    # nine tenths of the first sentence are out: timed within one answer, as the machine
    # may be slower for one request than for the next
    most = arrival_of_sample(arrivals, int(0.9 * len(alone) / 2))
    if streams:  # its first 0.37 s after the latent and one short vocoder run
        assert first < 0.75 * most, (first, most)
    else:  # the first sentence whole, in one write
        assert first > 0.95 * most, (first, most)
    rate, audio = pcm([e for _, e in arrivals])
    assert rate == 22_050
    assert loudness_of(rate, audio) == pytest.approx(-16, abs=1.0)
    assert word_error_rate(text, heard(transcriber, rate, audio)) <= 0.2


async def test_two_satellites_announcing_one_new_text_make_each_sentence_once(
    tmp_path: Path, transcriber: Transcriber
) -> None:
    """Two clients ask one new three-sentence text at once: the second reads the first's
    stream of the first sentence and waits for the rest, so Piper says each sentence once."""
    settings = wyoming_settings(tmp_path, free_port(), cache={"enabled": True})
    async with running_wyoming(settings) as service:
        piper = service.pipeline.registry.get("piper")
        prepared = await service.pipeline.prepare(SpeechRequest(text="x", provider="piper"))
        assert await piper.prepare_streaming(prepared.voice)
        async with client(settings) as connection:
            await arrivals_of(connection, "Warm up. And learn the gain.")
        made, read = requests_counted("piper", "ok"), requests_counted("piper", "cached")
        async with client(settings) as one, client(settings) as other:
            answers = await asyncio.gather(arrivals_of(one, LONG), arrivals_of(other, LONG))
    first, second = (pcm([e for _, e in arrivals]) for arrivals in answers)
    assert requests_counted("piper", "ok") - made == 3  # one synthesis per sentence
    assert requests_counted("piper", "cached") - read == 3  # the other client's three
    assert first == second
    rate, audio = first
    assert word_error_rate(LONG, heard(transcriber, rate, audio)) <= 0.2


async def test_errors_come_back_as_events_and_the_connection_goes_on(
    tmp_path: Path, transcriber: Transcriber
) -> None:
    settings = wyoming_settings(tmp_path, free_port())
    async with running_wyoming(settings), client(settings) as connection:
        await connection.write_event(
            Synthesize("Hello.", voice=SynthesizeVoice(name="grandma")).event()
        )
        (event,) = await read_until(connection, ends_audio)
        error = Error.from_event(event)
        assert error.code == "UnknownVoice"
        assert "unknown voice 'grandma'" in error.text
        assert PIPER in error.text  # what there is instead

        await connection.write_event(Synthesize("   ").event())
        (event,) = await read_until(connection, ends_audio)
        assert Error.from_event(event).code == "EmptyText"
        assert "text is empty" in Error.from_event(event).text

        await connection.write_event(Event(type="synthesize", data={"voice": {}}))  # no text
        (event,) = await read_until(connection, ends_audio)
        assert Error.from_event(event).code == "InvalidEvent"
        assert "malformed synthesize event" in Error.from_event(event).text

        await connection.write_event(Synthesize("Still here.").event())
        events = await read_until(connection, ends_audio)
        assert events[-1].type == "audio-stop"
        assert word_error_rate("Still here.", heard(transcriber, *pcm(events))) <= 0.5


async def test_a_silent_connection_is_closed_after_an_error(tmp_path: Path) -> None:
    """Home Assistant's client waits for audio until the connection closes."""
    settings = wyoming_settings(tmp_path, free_port())
    async with running_wyoming(settings), client(settings) as connection:
        await connection.write_event(
            Synthesize("Hello.", voice=SynthesizeVoice(name="nobody")).event()
        )
        async with asyncio.timeout(10):
            error = await connection.read_event()
            assert error is not None
            assert error.type == "error"
            assert await connection.read_event() is None


async def test_streamed_text_is_spoken_sentence_by_sentence(
    tmp_path: Path, transcriber: Transcriber
) -> None:
    settings = wyoming_settings(tmp_path, free_port())
    first, second = "Good morning, the kitchen lights are on.", "The coffee is ready now."
    async with running_wyoming(settings), client(settings) as connection:
        await connection.write_event(SynthesizeStart(voice=SynthesizeVoice(name=PIPER)).event())
        for piece in ("Good morning, ", "the kitchen lights ", "are on. ", "The coffee"):
            await connection.write_event(SynthesizeChunk(piece).event())
        # the first sentence is spoken while its text stream is still open
        events = await read_until(connection, lambda e: AudioChunk.is_type(e.type), 30)
        assert events[0].type == "audio-start"
        await connection.write_event(SynthesizeChunk(" is ready now.").event())
        # the plain synthesize a client sends for servers without streaming: not spoken again
        await connection.write_event(Synthesize(f"{first} {second}").event())
        await connection.write_event(SynthesizeStop().event())
        events += await read_until(connection, lambda e: e.type in ("synthesize-stopped", "error"))
    kinds = [e.type for e in events]
    assert kinds[-1] == "synthesize-stopped"
    assert kinds.count("audio-start") == kinds.count("audio-stop") == 2
    rate, audio = pcm(events)
    assert word_error_rate(f"{first} {second}", heard(transcriber, rate, audio)) <= 0.2


async def test_a_cloud_voice_is_spoken_by_its_provider_then_by_the_fallback(
    tmp_path: Path, transcriber: Transcriber
) -> None:
    message = "Someone is at the front door."
    async with FakeSegmind(synthesizer=piper_pcm) as segmind:
        settings = wyoming_settings(
            tmp_path,
            free_port(),
            providers={"segmind": {"api_key": DEFAULT_API_KEY, "base_url": segmind.base_url}},
        )
        fallbacks = requests_counted("piper", "ok")
        async with running_wyoming(settings), client(settings) as connection:
            orpheus = Synthesize(message, voice=SynthesizeVoice(name=ORPHEUS)).event()
            await connection.write_event(orpheus)
            spoken = await read_until(connection, ends_audio)
            (call,) = segmind.requests_to("/v1/orpheus-3b-0.1")
            assert call.json["text"] == message
            assert call.json["voice"] == "dan"
            assert requests_counted("segmind", "ok") >= 1

            segmind.inject_error("/v1/orpheus-3b-0.1", 406, "Insufficient credits")
            await connection.write_event(orpheus)
            fallen_back = await read_until(connection, ends_audio)
            assert len(segmind.requests_to("/v1/orpheus-3b-0.1")) == 2
            assert requests_counted("piper", "ok") == fallbacks + 1
    for events in (spoken, fallen_back):
        assert events[-1].type == "audio-stop", events[-1]
        assert word_error_rate(message, heard(transcriber, *pcm(events))) <= 0.2


async def test_a_sentences_events_go_out_in_one_write_framed_as_the_package_reads_them() -> None:
    received: asyncio.Queue[Event | None] = asyncio.Queue()

    async def read_all(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (event := await async_read_event(reader)) is not None:
            received.put_nowait(event)
        received.put_nowait(None)
        writer.close()

    server = await asyncio.start_server(read_all, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writes: list[int] = []
    write = writer.write

    def counted(data: Any) -> None:
        writes.append(len(data))
        write(data)

    writer.write = counted  # type: ignore[method-assign]
    sent = [
        AudioStart(rate=22050, width=2, channels=1).event(),
        *(
            AudioChunk(rate=22050, width=2, channels=1, audio=bytes([n]) * 4096).event()
            for n in range(3)
        ),
        AudioStop().event(),
    ]
    try:
        await write_events(sent, writer)
        assert len(writes) == 1  # one system call's worth, not one per event
        writer.close()
        got = [event async for event in _until_none(received)]
    finally:
        server.close()
        await server.wait_closed()
    assert [(e.type, e.data, e.payload) for e in got] == [(e.type, e.data, e.payload) for e in sent]


async def _until_none(queue: asyncio.Queue[Event | None]) -> Any:
    async with asyncio.timeout(5):
        while (event := await queue.get()) is not None:
            yield event


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"uri": "http://0.0.0.0:10200"}, "is not tcp://HOST:PORT or unix://PATH"),
        ({"uri": "tcp://0.0.0.0"}, "needs a host and a port"),
        ({"uri": "unix:///tmp/oyez.sock", "zeroconf": True}, "needs a tcp:// uri"),
        ({"uri": "tcp://0.0.0.0:10200", "zerconf": True}, "zerconf"),
        (
            {"uri": "tcp://0.0.0.0:10200", "stream_within_sentence": "often"},
            "stream_within_sentence: .*boolean",
        ),
    ],
)
def test_a_wrong_wyoming_section_is_a_config_error(
    tmp_path: Path, section: dict[str, Any], problem: str
) -> None:
    settings = config.load(data_dir=tmp_path, wyoming=section)
    with pytest.raises(ConfigError, match=problem):
        WyomingSettings.from_settings(settings)


def test_wyoming_is_off_without_a_uri(tmp_path: Path) -> None:
    assert not WyomingSettings.from_settings(config.load(data_dir=tmp_path)).enabled


async def test_zeroconf_announces_the_server_until_it_stops(tmp_path: Path) -> None:
    port = free_port()
    settings = config.load(
        data_dir=tmp_path / "data",
        http={"host": "127.0.0.1", "port": 0},
        wyoming={
            "uri": f"tcp://127.0.0.1:{port}",
            "zeroconf": True,
            "zeroconf_name": "oyez-test",  # no zeroconf_host: the uri's host is announced
        },
    )
    name = f"oyez-test.{SERVICE_TYPE}"

    async def look_up() -> AsyncServiceInfo | None:
        browser = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
        try:
            found = AsyncServiceInfo(SERVICE_TYPE, name)
            return found if await found.async_request(browser.zeroconf, 3000) else None
        finally:
            await browser.async_close()

    async with running_wyoming(settings):
        found = await look_up()
        assert found is not None
        assert (found.port, found.parsed_addresses()) == (port, ["127.0.0.1"])
    assert await look_up() is None


async def test_wyoming_requests_spend_budgets(tmp_path: Path) -> None:
    """A Wyoming client is a user (``wyoming:<address>``): its daily budget holds one Orpheus
    call ($0.124), and the next request falls back to Piper without calling Segmind."""
    async with FakeSegmind() as segmind:
        settings = wyoming_settings(
            tmp_path,
            free_port(),
            providers={"segmind": {"api_key": DEFAULT_API_KEY, "base_url": segmind.base_url}},
            budgets={"per_user_usd": 0.2},
        )
        async with running_wyoming(settings), client(settings) as connection:
            for text in ("First call.", "Second call."):
                voice = SynthesizeVoice(name=ORPHEUS)
                await connection.write_event(Synthesize(text, voice=voice).event())
                events = await read_until(connection, ends_audio)
                assert events[-1].type == "audio-stop", events[-1]
        assert [c.json["text"] for c in segmind.requests_to("/v1/orpheus-3b-0.1")] == [
            "First call."
        ]
