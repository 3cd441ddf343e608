"""``oyez say`` and ``oyez voices`` with every cloud provider, as a subprocess against the
simulated APIs (which speak with the real local Piper voice)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from tests.fakes.openai_speech import FakeOpenAISpeech
from tests.fakes.segmind import DEFAULT_API_KEY as SEGMIND_KEY
from tests.fakes.segmind import FakeSegmind
from tests.fakes.together import DEFAULT_API_KEY as TOGETHER_KEY
from tests.fakes.together import FakeTogether
from tests.support.asr import Transcriber, word_error_rate
from tests.support.probe import describe
from tests.support.speech import piper_pcm

TEXT = "The living room lights are still on."


async def oyez(*args: str, cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("OYEZ_") and k not in ("SEGMIND_API_KEY", "TOGETHER_API_KEY")
    }
    environment.update(env)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        cwd=cwd,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_say_with_segmind_orpheus(tmp_path: Path, transcriber: Transcriber) -> None:
    async with FakeSegmind(synthesizer=piper_pcm) as fake:
        code, out, err = await oyez(
            "say",
            TEXT,
            "--provider",
            "segmind",
            "--voice",
            "emma",
            "--option",
            "temperature=0.7",
            "-o",
            "segmind.ogg",
            cwd=tmp_path,
            env={
                "SEGMIND_API_KEY": SEGMIND_KEY,
                "OYEZ_PROVIDERS__SEGMIND__BASE_URL": fake.base_url,
            },
        )
        assert code == 0, err
        (call,) = fake.requests_to("/v1/orpheus-3b-0.1")
        assert call.json is not None
        assert (call.json["voice"], call.json["temperature"]) == ("emma", 0.7)
    assert "segmind/orpheus-3b-0.1/emma" in out
    assert SEGMIND_KEY not in out + err
    audio = (tmp_path / "segmind.ogg").read_bytes()
    assert word_error_rate(TEXT, transcriber.transcribe(audio)) <= 0.2


async def test_say_with_together_kokoro_mix(tmp_path: Path, transcriber: Transcriber) -> None:
    async with FakeTogether(synthesizer=piper_pcm) as fake:
        code, out, err = await oyez(
            "say",
            TEXT,
            "--provider",
            "together",
            "--voice",
            "af_heart(2)+af_bella(1)",
            "-o",
            "together.mp3",
            cwd=tmp_path,
            env={
                "TOGETHER_API_KEY": TOGETHER_KEY,
                "OYEZ_PROVIDERS__TOGETHER__BASE_URL": fake.base_url,
            },
        )
        assert code == 0, err
        speech = fake.requests_to("/v1/audio/speech")
        assert speech[-1].json is not None
        assert speech[-1].json["voice"] == "af_heart(2)+af_bella(1)"
    assert describe((tmp_path / "together.mp3").read_bytes()).startswith("mp3")
    audio = (tmp_path / "together.mp3").read_bytes()
    assert word_error_rate(TEXT, transcriber.transcribe(audio)) <= 0.2
    assert TOGETHER_KEY not in out + err


async def test_say_with_a_named_openai_compatible_server(tmp_path: Path) -> None:
    async with FakeOpenAISpeech(synthesizer=piper_pcm) as fake:
        (tmp_path / "oyez.yaml").write_text(
            f"providers:\n  kokoro:\n    type: openai\n    base_url: {fake.base_url}/v1\n"
            "    model: kokoro\n    default_voice: af_heart\n"
        )
        code, out, err = await oyez(
            "say", TEXT, "--provider", "kokoro", "--option", "speed=1.1", cwd=tmp_path, env={}
        )
        assert code == 0, err
        assert fake.requests_to("/v1/audio/speech")
    assert "kokoro/kokoro/af_heart" in out
    assert (tmp_path / "announcement.ogg").read_bytes()[:4] == b"OggS"


async def test_voices_per_provider(tmp_path: Path) -> None:
    async with FakeTogether() as fake:
        code, out, err = await oyez(
            "voices",
            "--provider",
            "together",
            "--json",
            cwd=tmp_path,
            env={
                "TOGETHER_API_KEY": TOGETHER_KEY,
                "OYEZ_PROVIDERS__TOGETHER__BASE_URL": fake.base_url,
            },
        )
    assert code == 0, err
    voices = [json.loads(line) for line in out.splitlines()]
    assert {v["provider"] for v in voices} == {"together"}
    assert {"hexgrad/Kokoro-82M", "cartesia/sonic"} <= {v["model"] for v in voices}
    assert any(v["id"] == "af_heart" and v["default"] for v in voices)


async def test_cloud_provider_without_key_exits_2(tmp_path: Path) -> None:
    code, _, err = await oyez("say", "hi", "--provider", "together", cwd=tmp_path, env={})
    assert code == 2
    assert "TOGETHER_API_KEY" in err


async def test_bad_option_costs_nothing(tmp_path: Path) -> None:
    async with FakeSegmind() as fake:
        code, _, err = await oyez(
            "say",
            "hi",
            "--provider",
            "segmind",
            "--model",
            "orpheus-3b-0.1",
            "--option",
            "temperature=3",
            cwd=tmp_path,
            env={
                "SEGMIND_API_KEY": SEGMIND_KEY,
                "OYEZ_PROVIDERS__SEGMIND__BASE_URL": fake.base_url,
            },
        )
        assert code == 2
        assert "temperature" in err
        assert fake.requests == []


async def test_cli_says_who_spoke_instead_and_strict_mode_fails(tmp_path: Path) -> None:
    env = {"SEGMIND_API_KEY": SEGMIND_KEY}
    async with FakeSegmind() as fake:
        env["OYEZ_PROVIDERS__SEGMIND__BASE_URL"] = fake.base_url
        fake.inject_error("/v1/chatterbox-tts", 406, "Insufficient credits")
        code, out, err = await oyez(
            "say", "Hello there.", "--provider", "segmind", cwd=tmp_path, env=env
        )
        assert code == 0, err
        assert "piper/en_US-joe-medium" in out
        assert "instead   of segmind, which did not speak" in out
        assert "Insufficient credits" in out

        code, out, err = await oyez("credits", "--provider", "segmind", cwd=tmp_path, env=env)
        assert code == 0, err
        assert "credits   $10.0000" in out
        assert "limits    5 per minute, 2 at once" in out
        assert "circuit   OPEN" in out  # remembered in ./data from the run above

        code, _, err = await oyez(
            "say", "Hello.", "--provider", "segmind", "--no-fallback", cwd=tmp_path, env=env
        )
        assert code == 1
        assert "out of credits" in err
        assert len(fake.requests_to("/v1/chatterbox-tts")) == 1
