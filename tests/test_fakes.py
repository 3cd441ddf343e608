"""The simulated provider servers behave as the providers' documents say, errors included.

Over 450 lines: each simulated server's contract, checked where the fakes meet.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
import wave
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from tests.fakes import FakeClock, FakeOpenAISpeech, FakeSegmind, FakeTogether, ScriptedResponse
from tests.fakes.audio import SECONDS_PER_CHARACTER, TONE_RATE

pytest_plugins = ["tests.fakes.fixtures"]  # fake_segmind, fake_together, fake_openai

SEGMIND_KEY = {"x-api-key": "test-segmind-key"}
TOGETHER_AUTH = {"Authorization": "Bearer test-together-key"}
KOKORO = "hexgrad/Kokoro-82M"
REFERENCE = "https://example.com/voice.mp3"

# Valid bodies, from the seed pages' examples.
VALID_BODIES: dict[str, dict[str, Any]] = {
    "orpheus-3b-0.1": {
        "text": "Today has been exhausting. <sigh>",
        "top_p": 0.95,
        "voice": "dan",
        "temperature": 0.6,
        "max_new_tokens": 1200,
        "repetition_penalty": 1.1,
    },
    "chatterbox-tts": {
        "text": "Welcome to Chatterbox TTS.",
        "reference_audio": REFERENCE,
        "exaggeration": 0.5,
        "temperature": 0.8,
        "seed": 42,
        "cfg_weight": 0.5,
        "min_p": 0.05,
        "top_p": 1,
        "repetition_penalty": 1.2,
    },
    "chatterbox-turbo-tts": {
        "text": "Introducing the Skyline T-800. [laugh]",
        "reference_audio": REFERENCE,
        "temperature": 0.7,
        "seed": 42,
        "min_p": 0,
        "top_p": 0.9,
        "top_k": 500,
        "repetition_penalty": 1.3,
        "norm_loudness": True,
    },
    "openvoice": {
        "input_audio": REFERENCE,
        "language": "EN_NEWEST",
        "speed": 1,
        "text": "Did you ever hear a folk tale about a giant turtle?",
    },
}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def tone_samples(text: str) -> int:
    return len(text) * int(TONE_RATE * SECONDS_PER_CHARACTER)


def read_wav(data: bytes) -> tuple[int, int]:
    """(frame rate, frame count) of a WAV file."""
    with wave.open(io.BytesIO(data)) as audio:
        return audio.getframerate(), audio.getnframes()


# -- Segmind ------------------------------------------------------------------------------------


async def segmind_post(
    session: aiohttp.ClientSession,
    fake: FakeSegmind,
    path: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> aiohttp.ClientResponse:
    response = await session.post(
        fake.url(path), json=body, headers=SEGMIND_KEY if headers is None else headers
    )
    await response.read()
    return response


async def test_segmind_sync_returns_audio_and_billing_headers(
    fake_segmind: FakeSegmind, session: aiohttp.ClientSession
) -> None:
    body = VALID_BODIES["orpheus-3b-0.1"]
    response = await segmind_post(session, fake_segmind, "/v1/orpheus-3b-0.1", body)
    assert response.status == 200
    assert response.headers["Content-Type"] == "audio/wav"
    assert read_wav(await response.read()) == (TONE_RATE, tone_samples(body["text"]))
    assert response.headers["x-cost"] == "0.124"
    assert response.headers["x-remaining-credits"] == "9.876"
    assert float(response.headers["x-generation-time"]) >= 0
    assert len(response.headers["x-request-id"]) == 36
    assert fake_segmind.billed_calls == 1
    assert fake_segmind.credits == pytest.approx(9.876)


@pytest.mark.parametrize("model", list(VALID_BODIES))
async def test_segmind_accepts_each_models_documented_example(
    fake_segmind: FakeSegmind, session: aiohttp.ClientSession, model: str
) -> None:
    response = await segmind_post(session, fake_segmind, f"/v1/{model}", VALID_BODIES[model])
    assert response.status == 200, await response.text()
    assert (await response.read())[:4] == b"RIFF"
    assert fake_segmind.billed[-1].model == model


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"Authorization": "Bearer test-segmind-key"}, "Bearer"),
        ({"x-api-key": "wrong"}, "invalid"),
        ({}, "missing"),
    ],
)
async def test_segmind_auth_is_x_api_key_only(
    fake_segmind: FakeSegmind, session: aiohttp.ClientSession, headers: dict[str, str], message: str
) -> None:
    body = VALID_BODIES["chatterbox-tts"]
    response = await segmind_post(session, fake_segmind, "/v1/chatterbox-tts", body, headers)
    assert response.status == 401
    assert message in (await response.json())["error"]
    assert fake_segmind.billed_calls == 0


@pytest.mark.parametrize("content_type", [None, "text/plain"])
async def test_segmind_requires_json_content_type(
    fake_segmind: FakeSegmind, session: aiohttp.ClientSession, content_type: str | None
) -> None:
    headers = dict(SEGMIND_KEY)
    if content_type:
        headers["Content-Type"] = content_type
    async with session.post(
        fake_segmind.url("/v1/chatterbox-tts"),
        data=json.dumps(VALID_BODIES["chatterbox-tts"]).encode(),
        headers=headers,
        skip_auto_headers=["Content-Type"],
    ) as response:
        assert response.status == 406
        assert await response.json() == {"error": "Invalid content type"}
    assert fake_segmind.billed_calls == 0


async def test_segmind_unknown_model_is_404(
    fake_segmind: FakeSegmind, session: aiohttp.ClientSession
) -> None:
    response = await segmind_post(session, fake_segmind, "/v1/no-such-model", {"text": "hi"})
    assert response.status == 404
    assert "no-such-model" in (await response.json())["error"]


@pytest.mark.parametrize(
    ("model", "change", "field"),
    [
        ("orpheus-3b-0.1", {"text": None}, "text"),
        ("orpheus-3b-0.1", {"voice": "bob"}, "voice"),
        ("orpheus-3b-0.1", {"temperature": 1.6}, "temperature"),
        ("orpheus-3b-0.1", {"top_p": 0.05}, "top_p"),
        ("orpheus-3b-0.1", {"max_new_tokens": 99}, "max_new_tokens"),
        ("orpheus-3b-0.1", {"max_new_tokens": 150.5}, "max_new_tokens"),
        ("chatterbox-tts", {"exaggeration": 2.5}, "exaggeration"),
        ("chatterbox-tts", {"seed": "42"}, "seed"),
        ("chatterbox-tts", {"reference_audio": "voice.mp3"}, "reference_audio"),
        ("chatterbox-turbo-tts", {"reference_audio": None}, "reference_audio"),
        ("chatterbox-turbo-tts", {"top_k": 1001}, "top_k"),
        ("chatterbox-turbo-tts", {"temperature": 0.01}, "temperature"),
        ("chatterbox-turbo-tts", {"norm_loudness": "yes"}, "norm_loudness"),
        ("openvoice", {"speed": None}, "speed"),
        ("openvoice", {"speed": 2.5}, "speed"),
        ("openvoice", {"language": "DE"}, "language"),
        ("openvoice", {"input_audio": None}, "input_audio"),
    ],
)
async def test_segmind_validation_names_the_field_and_bills_nothing(
    fake_segmind: FakeSegmind,
    session: aiohttp.ClientSession,
    model: str,
    change: dict[str, Any],
    field: str,
) -> None:
    body = {k: v for k, v in (VALID_BODIES[model] | change).items() if v is not None}
    response = await segmind_post(session, fake_segmind, f"/v1/{model}", body)
    assert response.status == 400
    assert f"'{field}'" in (await response.json())["error"]
    assert fake_segmind.billed_calls == 0
    assert fake_segmind.credits == 10.0


async def test_segmind_range_bounds_are_inclusive(
    fake_segmind: FakeSegmind, session: aiohttp.ClientSession
) -> None:
    body = VALID_BODIES["orpheus-3b-0.1"] | {"temperature": 1.5, "max_new_tokens": 100}
    response = await segmind_post(session, fake_segmind, "/v1/orpheus-3b-0.1", body)
    assert response.status == 200


async def test_segmind_insufficient_credits_is_406_and_not_billed(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeSegmind(credits=0.15) as fake:
        body = VALID_BODIES["orpheus-3b-0.1"]
        first = await segmind_post(session, fake, "/v1/orpheus-3b-0.1", body)
        second = await segmind_post(session, fake, "/v1/orpheus-3b-0.1", body)
        assert first.status == 200
        assert second.status == 406
        assert "insufficient credits" in (await second.json())["error"].lower()
        assert fake.billed_calls == 1
        assert fake.credits == pytest.approx(0.026)
        async with session.get(fake.url("/v1/get-user-credits"), headers=SEGMIND_KEY) as credits:
            assert credits.status == 200
            balance = await credits.json()
        assert balance["credits"] == pytest.approx(0.026)
        assert balance["free-credits"] == 0.0
        assert fake.billed_calls == 1  # asking for the balance is free


async def test_segmind_free_credits_are_spent_and_counted(session: aiohttp.ClientSession) -> None:
    async with FakeSegmind(credits=0.0, free_credits=0.0184921035) as fake:
        chatterbox = VALID_BODIES["chatterbox-tts"]
        response = await segmind_post(session, fake, "/v1/chatterbox-tts", chatterbox)
        assert response.status == 406  # 0.02 > 0.0185
        body = VALID_BODIES["chatterbox-turbo-tts"]
        response = await segmind_post(session, fake, "/v1/chatterbox-turbo-tts", body)
        assert response.status == 200
        assert float(response.headers["x-remaining-credits"]) == pytest.approx(0.0084921035)
        assert fake.free_credits == pytest.approx(0.0084921035)


async def test_segmind_json_replies_carry_a_media_url_or_base64(
    session: aiohttp.ClientSession,
) -> None:
    body = VALID_BODIES["chatterbox-tts"]
    async with FakeSegmind(sync_response="json_url") as fake:
        response = await segmind_post(session, fake, "/v1/chatterbox-tts", body)
        assert response.headers["Content-Type"].startswith("application/json")
        url = (await response.json())["output"]
        assert url.startswith(fake.base_url + "/media/")
        async with session.get(url) as media:
            assert media.headers["Content-Type"] == "audio/wav"
            assert read_wav(await media.read())[1] == tone_samples(body["text"])
    async with FakeSegmind(sync_response="json_base64") as fake:
        response = await segmind_post(session, fake, "/v1/chatterbox-tts", body)
        audio = base64.b64decode((await response.json())["audio"])
        assert read_wav(audio)[1] == tone_samples(body["text"])
    async with FakeSegmind(audio_content_type="application/octet-stream") as fake:
        response = await segmind_post(session, fake, "/v1/chatterbox-tts", body)
        assert response.headers["Content-Type"] == "application/octet-stream"
        assert response.headers["x-seed-value"] == "42"


async def test_segmind_mp3_output(session: aiohttp.ClientSession) -> None:
    async with FakeSegmind(audio_format="mp3") as fake:
        body = VALID_BODIES["openvoice"]
        response = await segmind_post(session, fake, "/v1/openvoice", body)
        assert response.headers["Content-Type"] == "audio/mpeg"
        assert (await response.read())[:3] == b"ID3"


async def test_segmind_v2_progresses_and_bills_once(
    fake_segmind: FakeSegmind, session: aiohttp.ClientSession
) -> None:
    body = VALID_BODIES["chatterbox-turbo-tts"]
    submit = await segmind_post(session, fake_segmind, "/v2/chatterbox-turbo-tts", body)
    job = await submit.json()
    assert job["status"] == "QUEUED"
    request_id = job["request_id"]
    assert job["status_url"] == fake_segmind.url(f"/v2/requests/{request_id}/status")
    assert job["response_url"] == fake_segmind.url(f"/v2/requests/{request_id}")
    seen = []
    for _ in range(4):
        async with session.get(job["status_url"], headers=SEGMIND_KEY) as status:
            assert status.status == 200
            seen.append((await status.json())["status"])
    assert seen == ["QUEUED", "PROCESSING", "COMPLETED", "COMPLETED"]
    async with session.get(job["response_url"], headers=SEGMIND_KEY) as result:
        assert result.status == 200
        final = await result.json()
    assert final["status"] == "COMPLETED"
    assert final["metrics"]["cost"] == 0.01
    assert final["metrics"]["remaining_credits"] == pytest.approx(9.99)
    assert final["metrics"]["inference_time"] >= 0
    async with session.get(final["output"]) as media:
        assert read_wav(await media.read())[1] == tone_samples(body["text"])
    assert fake_segmind.billed_calls == 1
    assert fake_segmind.credits == pytest.approx(9.99)


async def test_segmind_v2_progression_can_follow_the_clock(session: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    async with FakeSegmind(clock=clock, v2_queued_seconds=5, v2_processing_seconds=10) as fake:
        submit = await segmind_post(session, fake, "/v2/openvoice", VALID_BODIES["openvoice"])
        status_url = (await submit.json())["status_url"]
        seen = []
        for step in (0, 5, 9, 1):
            clock.advance(step)
            async with session.get(status_url, headers=SEGMIND_KEY) as status:
                seen.append((await status.json())["status"])
        assert seen == ["QUEUED", "PROCESSING", "PROCESSING", "COMPLETED"]


async def test_segmind_v2_failure_is_422_with_detail(
    fake_segmind: FakeSegmind, session: aiohttp.ClientSession
) -> None:
    fake_segmind.v2_queued_polls = fake_segmind.v2_processing_polls = 0
    fake_segmind.fail_next_job("Content blocked by safety filter")
    body = VALID_BODIES["openvoice"]
    job = await (await segmind_post(session, fake_segmind, "/v2/openvoice", body)).json()
    async with session.get(job["status_url"], headers=SEGMIND_KEY) as status:
        assert (await status.json())["status"] == "FAILED"
    async with session.get(job["response_url"], headers=SEGMIND_KEY) as result:
        assert result.status == 422
        detail = await result.json()
    assert detail["status"] == "FAILED"
    assert detail["error"] == "Content blocked by safety filter"
    assert fake_segmind.billed_calls == 1  # the submit was billed


async def test_segmind_v2_unknown_and_undocumented_are_404(
    fake_segmind: FakeSegmind, session: aiohttp.ClientSession
) -> None:
    for path in ("/v2/requests/nope/status", "/v2/requests/nope"):
        async with session.get(fake_segmind.url(path), headers=SEGMIND_KEY) as response:
            assert response.status == 404
            assert "error" in await response.json()
    body = VALID_BODIES["orpheus-3b-0.1"]  # its page documents no v2 endpoint
    response = await segmind_post(session, fake_segmind, "/v2/orpheus-3b-0.1", body)
    assert response.status == 404
    assert fake_segmind.billed_calls == 0


async def test_segmind_v2_results_expire_after_an_hour(session: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    async with FakeSegmind(clock=clock, v2_queued_polls=0, v2_processing_polls=0) as fake:
        body = VALID_BODIES["openvoice"]
        job = await (await segmind_post(session, fake, "/v2/openvoice", body)).json()
        async with session.get(job["response_url"], headers=SEGMIND_KEY) as result:
            output = (await result.json())["output"]
        clock.advance(3599)
        async with session.get(job["response_url"], headers=SEGMIND_KEY) as result:
            assert result.status == 200
        clock.advance(2)
        for url in (job["response_url"], job["status_url"]):
            async with session.get(url, headers=SEGMIND_KEY) as result:
                assert result.status == 404
        async with session.get(output) as media:
            assert media.status == 404


async def test_segmind_rate_limit_429_carries_reset_time(session: aiohttp.ClientSession) -> None:
    clock = FakeClock(start=1_700_000_000.0)
    async with FakeSegmind(rate_limit_per_minute=5, clock=clock) as fake:
        url = fake.url("/v1/get-user-credits")
        for expected_remaining in ("4", "3", "2", "1", "0"):
            async with session.get(url, headers=SEGMIND_KEY) as response:
                assert response.status == 200
                assert response.headers["x-rate-limit-remaining"] == expected_remaining
        async with session.get(url, headers=SEGMIND_KEY) as response:
            assert response.status == 429
            assert "error" in await response.json()
            reset = datetime.strptime(
                response.headers["x-rate-limit-reset-at-utc"], "%Y-%m-%dT%H:%M:%SZ"
            ).replace(tzinfo=UTC)
            assert reset.timestamp() == 1_700_000_060
            assert response.headers["x-rate-limit-remaining"] == "0"
        clock.advance(60)
        async with session.get(url, headers=SEGMIND_KEY) as response:
            assert response.status == 200


async def test_segmind_scripted_errors_come_first_in_order(
    fake_segmind: FakeSegmind, session: aiohttp.ClientSession
) -> None:
    fake_segmind.inject_error("/v1/chatterbox-tts", 502, "Bad gateway")
    fake_segmind.script(
        "POST",
        "/v1/{model}",
        ScriptedResponse(429, {"error": "slow down"}, {"x-rate-limit-reset-at-utc": "soon"}),
    )
    body = VALID_BODIES["chatterbox-tts"]
    statuses = [
        (await segmind_post(session, fake_segmind, "/v1/chatterbox-tts", body)).status
        for _ in range(3)
    ]
    assert statuses == [502, 429, 200]
    assert fake_segmind.billed_calls == 1


async def test_segmind_request_log_redacts_the_key(
    fake_segmind: FakeSegmind, session: aiohttp.ClientSession
) -> None:
    body = VALID_BODIES["chatterbox-tts"]
    await segmind_post(session, fake_segmind, "/v1/chatterbox-tts", body)
    [logged] = fake_segmind.requests_to("/v1/chatterbox-tts", "POST")
    assert logged.headers["x-api-key"] == "<redacted>"
    assert "test-segmind-key" not in repr(logged)
    assert logged.json == body


# -- scripted delays and dropped connections (shared machinery) --------------------------------


async def test_scripted_drop_and_delay(
    fake_together: FakeTogether, session: aiohttp.ClientSession
) -> None:
    fake_together.script(
        "POST",
        "/v1/audio/speech",
        ScriptedResponse(drop=True),
        ScriptedResponse(503, {"error": {"message": "busy"}}, delay=0.2),
    )
    body = {"model": KOKORO, "input": "hi", "voice": "af_heart"}
    url = fake_together.url("/v1/audio/speech")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await session.post(url, json=body, headers=TOGETHER_AUTH)
    started = time.monotonic()
    async with session.post(url, json=body, headers=TOGETHER_AUTH) as response:
        assert response.status == 503
    assert time.monotonic() - started >= 0.2
    async with session.post(url, json=body, headers=TOGETHER_AUTH) as response:
        assert response.status == 200
    assert fake_together.billed_calls == 1
    assert len(fake_together.requests) == 3


# -- Together -----------------------------------------------------------------------------------


async def together_post(
    session: aiohttp.ClientSession, fake: FakeTogether, body: dict[str, Any]
) -> aiohttp.ClientResponse:
    response = await session.post(fake.url("/v1/audio/speech"), json=body, headers=TOGETHER_AUTH)
    await response.read()
    return response


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, SEGMIND_KEY])
async def test_together_requires_bearer(
    fake_together: FakeTogether, session: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    body = {"model": KOKORO, "input": "hi", "voice": "af_heart"}
    url = fake_together.url("/v1/audio/speech")
    async with session.post(url, json=body, headers=headers) as response:
        assert response.status == 401
        error = (await response.json())["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert fake_together.billed_calls == 0


async def test_together_wav_mp3_and_raw(
    fake_together: FakeTogether, session: aiohttp.ClientSession
) -> None:
    text = "hello"
    base = {"model": "cartesia/sonic-2", "input": text, "voice": "laidback woman"}
    wav = await together_post(session, fake_together, base | {"sample_rate": 16000})
    assert wav.headers["Content-Type"] == "audio/wav"
    assert read_wav(await wav.read()) == (16000, tone_samples(text) * 16000 // TONE_RATE)
    mp3 = await together_post(session, fake_together, base | {"response_format": "mp3"})
    assert mp3.headers["Content-Type"] == "audio/mpeg"
    assert (await mp3.read())[:3] == b"ID3"
    cartesia_samples = tone_samples(text) * 44100 // TONE_RATE
    raw = await together_post(session, fake_together, base | {"response_format": "raw"})
    assert raw.headers["Content-Type"] == "application/octet-stream"
    assert len(await raw.read()) == cartesia_samples * 4  # pcm_f32le at 44100 by default
    mulaw = base | {"response_format": "raw", "response_encoding": "pcm_mulaw"}
    assert len(await (await together_post(session, fake_together, mulaw)).read()) == (
        cartesia_samples
    )
    assert "x-ratelimit-remaining" in raw.headers


@pytest.mark.parametrize(
    ("model", "voice"), [(KOKORO, "af_heart"), ("canopylabs/orpheus-3b-0.1-ft", "tara")]
)
async def test_together_orpheus_and_kokoro_are_always_24k_s16le(
    fake_together: FakeTogether, session: aiohttp.ClientSession, model: str, voice: str
) -> None:
    body = {"model": model, "input": "hello", "voice": voice, "sample_rate": 8000}
    raw = body | {"response_format": "raw", "response_encoding": "pcm_f32le"}
    assert len(await (await together_post(session, fake_together, raw)).read()) == (
        tone_samples("hello") * 2
    )
    wav = await together_post(session, fake_together, body)
    assert read_wav(await wav.read())[0] == 24000


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"voice": None}, "voice"),
        ({"input": None}, "input"),
        ({"voice": "nobody"}, "voice"),
        ({"voice": "af_heart+nobody"}, "voice"),
        ({"model": "cartesia/sonic", "voice": "laidback woman+newsman"}, "voice"),
        ({"response_format": "ogg"}, "response_format"),
        ({"response_encoding": "pcm_s24le"}, "response_encoding"),
        ({"bit_rate": 100}, "bit_rate"),
        ({"language": "xx"}, "language"),
        ({"sample_rate": "fast"}, "sample_rate"),
        ({"stream": True}, "response_format"),  # wav cannot be streamed
    ],
)
async def test_together_validation_names_the_param(
    fake_together: FakeTogether,
    session: aiohttp.ClientSession,
    change: dict[str, Any],
    param: str,
) -> None:
    body = {"model": KOKORO, "input": "hi", "voice": "af_heart"} | change
    response = await together_post(
        session, fake_together, {k: v for k, v in body.items() if v is not None}
    )
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["param"] == param
    assert error["message"]
    assert fake_together.billed_calls == 0


async def test_together_unknown_model_is_404(
    fake_together: FakeTogether, session: aiohttp.ClientSession
) -> None:
    body = {"model": "acme/tts", "input": "hi", "voice": "af_heart"}
    response = await together_post(session, fake_together, body)
    assert response.status == 404
    assert (await response.json())["error"]["param"] == "model"


@pytest.mark.parametrize(
    ("voice", "status"),
    [
        ("af_heart+af_bella", 200),
        ("af_heart(2)+af_bella(1)", 200),
        ("af_heart(1.5)+af_bella+am_adam(0.5)", 200),
        ("af_heart(0)+af_bella(1)", 400),
        ("af_heart(2)+", 400),
    ],
)
async def test_together_kokoro_voice_mixes(
    fake_together: FakeTogether, session: aiohttp.ClientSession, voice: str, status: int
) -> None:
    body = {"model": KOKORO, "input": "hi", "voice": voice}
    assert (await together_post(session, fake_together, body)).status == status


async def read_sse(response: aiohttp.ClientResponse) -> list[tuple[float, str]]:
    """(arrival time, data) of each event."""
    events = []
    async for line in response.content:
        text = line.decode().strip()
        if text.startswith("data: "):
            events.append((time.monotonic(), text.removeprefix("data: ")))
    return events


@pytest.mark.parametrize(("shape", "key"), [("delta", "delta"), ("b64", "b64")])
async def test_together_streams_sse_in_either_chunk_shape(
    session: aiohttp.ClientSession, shape: Any, key: str
) -> None:
    text = "streaming speech"
    body = {"model": KOKORO, "input": text, "voice": "af_heart", "response_format": "raw"}
    async with FakeTogether(chunk_shape=shape) as fake:
        url = fake.url("/v1/audio/speech")
        async with session.post(url, json=body | {"stream": True}, headers=TOGETHER_AUTH) as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            events = await read_sse(r)
        whole = await (await together_post(session, fake, body)).read()
    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert len(chunks) > 1
    if shape == "delta":
        assert {c["type"] for c in chunks} == {"conversation.item.audio_output.delta"}
        assert {c["item_id"] for c in chunks} == {"tts_1"}
    else:
        assert {c["object"] for c in chunks} == {"audio.tts.chunk"}
        assert {c["model"] for c in chunks} == {KOKORO}
    assert b"".join(base64.b64decode(c[key]) for c in chunks) == whole


async def test_together_stream_is_paced(session: aiohttp.ClientSession) -> None:
    body = {
        "model": KOKORO,
        "input": "a sentence that lasts a while",
        "voice": "af_heart",
        "response_format": "raw",
        "stream": True,
    }
    async with FakeTogether(chunk_delay=0.05, chunk_seconds=0.2) as fake:
        started = time.monotonic()
        url = fake.url("/v1/audio/speech")
        async with session.post(url, json=body, headers=TOGETHER_AUTH) as response:
            events = await read_sse(response)
    assert len(events) >= 9
    first, done = events[0][0] - started, events[-1][0] - started
    assert done - first >= 0.05 * (len(events) - 3)  # the first chunk came well before the end


async def test_together_stream_error_event_mid_stream(
    fake_together: FakeTogether, session: aiohttp.ClientSession
) -> None:
    fake_together.inject_stream_error(after_chunks=2, message="GPU fell over")
    body = {
        "model": KOKORO,
        "input": "long enough for several chunks",
        "voice": "af_heart",
        "response_format": "raw",
        "stream": True,
    }
    url = fake_together.url("/v1/audio/speech")
    async with session.post(url, json=body, headers=TOGETHER_AUTH) as response:
        events = [data for _, data in await read_sse(response)]
    assert "[DONE]" not in events
    assert [("delta" in json.loads(e)) for e in events] == [True, True, False]
    assert json.loads(events[-1])["error"]["message"] == "GPU fell over"
    assert fake_together.streams_finished == 0


async def test_together_voices(fake_together: FakeTogether, session: aiohttp.ClientSession) -> None:
    url = fake_together.url("/v1/voices")
    async with session.get(url, params={"model": KOKORO}, headers=TOGETHER_AUTH) as response:
        data = (await response.json())["data"]
    assert [entry["model"] for entry in data] == [KOKORO]
    assert {"id": "af_heart", "name": "af_heart"} in data[0]["voices"]
    async with session.get(url, headers=TOGETHER_AUTH) as response:
        models = {entry["model"] for entry in (await response.json())["data"]}
    assert "cartesia/sonic" in models
    assert "canopylabs/orpheus-3b-0.1-ft" in models


async def test_together_rate_limit_headers_and_429(session: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    body = {"model": KOKORO, "input": "hi", "voice": "af_heart"}
    async with FakeTogether(rate_limit_per_minute=2, clock=clock) as fake:
        first = await together_post(session, fake, body)
        assert first.headers["x-ratelimit-limit"] == "2"
        assert first.headers["x-ratelimit-remaining"] == "1"
        await together_post(session, fake, body)
        clock.advance(15)
        limited = await together_post(session, fake, body)
        assert limited.status == 429
        assert limited.headers["Retry-After"] == "45"
        assert limited.headers["retry-after-ms"] == "45000"
        assert limited.headers["x-ratelimit-remaining"] == "0"
        assert limited.headers["x-ratelimit-reset"] == "45"
        assert (await limited.json())["error"]["message"]
        assert fake.billed_calls == 2


async def test_together_injected_429_then_success_and_503(
    fake_together: FakeTogether, session: aiohttp.ClientSession
) -> None:
    body = {"model": KOKORO, "input": "hi", "voice": "af_heart"}
    fake_together.inject_rate_limit(retry_after=2)
    fake_together.inject_overload()
    first = await together_post(session, fake_together, body)
    assert (first.status, first.headers["Retry-After"]) == (429, "2")
    assert first.headers["retry-after-ms"] == "2000"
    second = await together_post(session, fake_together, body)
    assert second.status == 503
    assert (await second.json())["error"]["message"]
    assert (await together_post(session, fake_together, body)).status == 200
    assert fake_together.billed_calls == 1


async def test_synthesizer_is_injectable_sync_or_async(session: aiohttp.ClientSession) -> None:
    async def async_voice(text: str) -> tuple[bytes, int]:  # noqa: ARG001 - the Synthesizer signature
        await asyncio.sleep(0)
        return b"\x01\x00" * 1600, 16000

    def sync_voice(text: str) -> tuple[bytes, int]:  # noqa: ARG001 - the Synthesizer signature
        return b"\x02\x00" * 800, 8000

    async with FakeSegmind(synthesizer=async_voice) as segmind:
        body = VALID_BODIES["chatterbox-tts"]
        audio = await (await segmind_post(session, segmind, "/v1/chatterbox-tts", body)).read()
        assert read_wav(audio) == (16000, 1600)
    async with FakeTogether(synthesizer=sync_voice) as together:
        body = {"model": KOKORO, "input": "hi", "voice": "af_heart", "response_format": "raw"}
        raw = await (await together_post(session, together, body)).read()
        assert raw == b"\x02\x00" * 2400  # resampled 8 kHz -> 24 kHz


# -- OpenAI-compatible / Kokoro-FastAPI ---------------------------------------------------------


async def test_openai_streams_chunked_mp3_by_default(
    fake_openai: FakeOpenAISpeech, session: aiohttp.ClientSession
) -> None:
    body = {"model": "kokoro", "input": "hello there", "voice": "af_heart"}
    url = fake_openai.url("/v1/audio/speech")
    async with session.post(url, json=body) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "audio/mpeg"
        assert response.headers.get("Transfer-Encoding") == "chunked"
        assert (await response.read())[:3] == b"ID3"


async def test_openai_pcm_and_speed(
    fake_openai: FakeOpenAISpeech, session: aiohttp.ClientSession
) -> None:
    body = {"model": "tts-1", "input": "hello", "voice": "alloy", "response_format": "pcm"}
    url = fake_openai.url("/v1/audio/speech")
    async with session.post(url, json=body | {"stream": False}) as response:
        assert response.headers["Content-Type"] == "audio/pcm"
        assert response.headers["Content-Length"] == str(tone_samples("hello") * 2)
        normal = await response.read()
    async with session.post(url, json=body | {"speed": 2.0}) as response:
        fast = await response.read()
    assert len(fast) == len(normal) // 2


@pytest.mark.parametrize(
    ("response_format", "magic"),
    [("wav", b"RIFF"), ("flac", b"fLaC"), ("opus", b"OggS"), ("aac", b"\xff\xf1")],
)
async def test_openai_formats(
    fake_openai: FakeOpenAISpeech,
    session: aiohttp.ClientSession,
    response_format: str,
    magic: bytes,
) -> None:
    body = {"model": "kokoro", "input": "hi", "voice": "af_bella(2)+af_sky(1)"}
    url = fake_openai.url("/v1/audio/speech")
    async with session.post(url, json=body | {"response_format": response_format}) as response:
        assert response.headers["Content-Type"] == f"audio/{response_format}"
        assert (await response.read()).startswith(magic)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"input": "x" * 4097}, "4096"),
        ({"input": ""}, "input"),
        ({"speed": 4.5}, "speed"),
        ({"speed": 0.2}, "speed"),
        ({"response_format": "ogg"}, "response_format"),
        ({"voice": "nobody"}, "nobody"),
        ({"model": "gpt-9"}, "model"),
    ],
)
async def test_openai_validation_errors(
    fake_openai: FakeOpenAISpeech,
    session: aiohttp.ClientSession,
    change: dict[str, Any],
    words: str,
) -> None:
    body = {"model": "kokoro", "input": "hi", "voice": "af_heart"} | change
    async with session.post(fake_openai.url("/v1/audio/speech"), json=body) as response:
        assert response.status == 400
        detail = (await response.json())["detail"]
    assert set(detail) == {"error", "message", "type"}
    assert words in detail["message"]
    assert fake_openai.billed_calls == 0


async def test_openai_voices_and_optional_key(session: aiohttp.ClientSession) -> None:
    async with FakeOpenAISpeech(api_key="local-key") as fake:
        async with session.get(fake.url("/v1/audio/voices")) as response:
            assert response.status == 401
            assert (await response.json())["detail"]["type"] == "authentication_error"
        auth = {"Authorization": "Bearer local-key"}
        async with session.get(fake.url("/v1/audio/voices"), headers=auth) as response:
            voices = (await response.json())["voices"]
        assert "af_heart" in voices
        assert fake.requests[-1].headers["authorization"] == "Bearer <redacted>"
