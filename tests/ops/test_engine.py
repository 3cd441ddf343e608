"""engine.url: embedded when empty, a checked Redis connection when set, a clear error when the
server does not answer (its password never shown)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import aiohttp
import pytest

from bot.errors import ConfigError
from bot.ops import config
from bot.ops import engine as engine_module
from bot.ops.config import EngineSettings
from bot.ops.engine import Engine, EngineUnavailable, masked_url
from bot.ops.logs import mask_secrets
from bot.providers.credits import Ledger
from bot.providers.redis_ledger import RedisLedger
from tests.fakes.segmind import DEFAULT_API_KEY as SEGMIND_KEY
from tests.fakes.segmind import FakeSegmind
from tests.support.homeassistant import free_port
from tests.support.redis_server import redis_server, redis_url  # noqa: F401


async def oyez(*args: str, cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    """``python -m bot ARGS`` in ``cwd`` with ``env`` over this environment less ``OYEZ_*``."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OYEZ_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, cwd=cwd, env=environment | env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret-pass@redis:6379/0", "redis://:***@redis:6379/0"),
        ("rediss://oyez:s3cret-pass@cache.example:6380/1", "rediss://***:***@cache.example:6380/1"),
        ("redis://redis:6379/0", "redis://redis:6379/0"),
        ("unix:///run/redis.sock?db=2", "unix:///run/redis.sock?db=2"),
    ],
)
def test_a_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert masked_url(url) == shown


def test_an_empty_url_is_embedded_and_a_foreign_one_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OYEZ_ENGINE__URL", "")
    assert config.load().engine.url is None
    monkeypatch.setenv("OYEZ_ENGINE__URL", " redis://redis:6379/0 ")
    assert config.load().engine.url == "redis://redis:6379/0"
    monkeypatch.setenv("OYEZ_ENGINE__URL", "http://redis:6379")
    with pytest.raises(ConfigError, match=r"engine\.url.*not a Redis URL"):
        config.load()


async def test_embedded_keeps_the_books_in_the_state_file(tmp_path: Path) -> None:
    async with await Engine.open(EngineSettings()) as engine:
        assert engine.embedded
        books = engine.books(tmp_path)
        assert isinstance(books, Ledger)
        books.close()


async def test_a_server_that_does_not_answer_stops_the_start_naming_it_masked() -> None:
    port = free_port()  # nothing listens there
    url = f"redis://:s3cret-engine-pass@127.0.0.1:{port}/0"
    with pytest.raises(EngineUnavailable) as caught:
        await Engine.open(EngineSettings(url=url))
    message = str(caught.value)
    assert f"redis://:***@127.0.0.1:{port}/0 does not answer" in message
    assert "s3cret-engine-pass" not in message
    assert "unset it to run as one process" in message
    assert "s3cret-engine-pass" not in mask_secrets(f"{url} again")  # and logs hide it


async def test_a_command_the_server_does_not_answer_fails_instead_of_hanging(
    redis_url: str,  # noqa: F811 - the fixture imported above
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stalled server (here: CLIENT PAUSE, which holds every client's commands) makes a
    command fail after COMMAND_TIMEOUT_S; without the timeout it waited for ever."""
    from redis.exceptions import TimeoutError as RedisTimeout

    monkeypatch.setattr(engine_module, "COMMAND_TIMEOUT_S", 0.5)
    engine = await Engine.open(EngineSettings(url=redis_url))
    pauser = await Engine.open(EngineSettings(url=redis_url))
    assert engine.client is not None and pauser.client is not None
    started = asyncio.get_running_loop().time()
    loop = asyncio.get_running_loop()
    try:
        await pauser.client.client_pause(1500, all=True)
        started = loop.time()
        with pytest.raises(RedisTimeout):
            await engine.client.get("anything")
        waited = loop.time() - started
        assert 0.4 < waited < 1.4  # the timeout, not the end of the pause
    finally:
        await asyncio.sleep(max(0.0, 1.6 - (loop.time() - started)))  # the pause is over
        await engine.aclose()
        await pauser.aclose()


async def test_a_server_shares_the_books(tmp_path: Path, redis_url: str) -> None:  # noqa: F811 - the fixture imported above
    async with await Engine.open(EngineSettings(url=redis_url)) as engine:
        assert not engine.embedded
        books = engine.books(tmp_path)
        assert isinstance(books, RedisLedger)
        await books.set_balance("segmind", 1.5)
        async with await Engine.open(EngineSettings(url=redis_url)) as other:
            seen = await other.books(tmp_path / "elsewhere").balance("segmind")
            assert seen is not None
            assert seen[0] == 1.5


async def test_oyez_run_stops_at_start_when_the_engine_does_not_answer(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "OYEZ_ENGINE__URL": f"redis://:s3cret-engine-pass@127.0.0.1:{port}/0",
        "OYEZ_HTTP__API_TOKEN": "test-api-token-0123456789",
        "OYEZ_HTTP__PORT": "0",
    }
    code, _, err = await oyez("run", cwd=tmp_path, env=env)
    assert code == 2
    assert f"oyez: error: engine.url redis://:***@127.0.0.1:{port}/0 does not answer" in err
    assert "s3cret-engine-pass" not in err


async def test_processes_in_two_folders_share_one_circuit_through_the_engine(
    tmp_path: Path,
    redis_url: str,  # noqa: F811 - the fixture imported above
) -> None:
    async with FakeSegmind() as fake:
        env = {
            "SEGMIND_API_KEY": SEGMIND_KEY,
            "OYEZ_PROVIDERS__SEGMIND__BASE_URL": fake.base_url,
            "OYEZ_ENGINE__URL": redis_url,
        }
        fake.inject_error("/v1/chatterbox-tts", 406, "Insufficient credits")
        here, there = tmp_path / "here", tmp_path / "there"
        here.mkdir()
        there.mkdir()
        code, out, err = await oyez("say", "Hello.", "--provider", "segmind", cwd=here, env=env)
        assert code == 0, err
        assert "Insufficient credits" in out
        code, out, err = await oyez(
            "credits", "--provider", "segmind", "--offline", cwd=there, env=env
        )
        assert code == 0, err
        assert "circuit   OPEN" in out  # not in ./data of this folder: in the engine
        assert not (there / "data" / "oyez.sqlite3").exists()


async def test_two_oyez_run_processes_answer_for_each_others_requests(
    tmp_path: Path,
    redis_url: str,  # noqa: F811 - the fixture imported above
) -> None:
    token = "test-api-token-0123456789"
    ports = [free_port(), free_port()]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OYEZ_")}
    processes = []
    for n, port in enumerate(ports):
        env = environment | {
            "OYEZ_ENGINE__URL": redis_url,
            "OYEZ_HTTP__API_TOKEN": token,
            "OYEZ_HTTP__HOST": "127.0.0.1",
            "OYEZ_HTTP__PORT": str(port),
            "OYEZ_DATA_DIR": str(tmp_path / f"data-{n}"),
        }
        processes.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot",
                "run",
                cwd=tmp_path,
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        )
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with aiohttp.ClientSession(headers=headers) as session:
            for port in ports:
                await until_healthy(session, port)
            body = {"id": "door-1", "message": "Someone is at the door."}
            async with session.post(f"http://127.0.0.1:{ports[0]}/api/v1/announce", json=body):
                pass
            found: dict[str, object] = {}
            for _ in range(100):
                url = f"http://127.0.0.1:{ports[1]}/api/v1/requests/door-1"
                async with session.get(url) as reply:
                    if reply.status == 200:
                        found = await reply.json()
                        if found["state"] != "queued":
                            break
                await asyncio.sleep(0.05)
        # no speaker here (no Home Assistant): it failed, and the other process says so
        assert (found.get("request_id"), found.get("state")) == ("door-1", "failed")
        assert "media_player" in str(found.get("reason"))
    finally:
        for process in processes:
            process.terminate()
            await process.wait()


async def until_healthy(session: aiohttp.ClientSession, port: int) -> None:
    async with asyncio.timeout(60):
        while True:
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as reply:
                    if reply.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)


async def test_check_config_shows_the_engine_url_without_its_password(tmp_path: Path) -> None:
    env = {"OYEZ_ENGINE__URL": "redis://:s3cret-engine-pass@redis:6379/0"}
    code, out, err = await oyez("check-config", cwd=tmp_path, env=env)
    assert code == 0, err
    assert "url: redis://:********@redis:6379/0" in out
    assert "s3cret-engine-pass" not in out + err
