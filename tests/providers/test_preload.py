"""The head start of a cold ``oyez say`` (bot.providers.preload): a guess from the raw
configuration, made only when it is sure, and the model it loads is the one the provider gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.providers.preload import head_start
from integrations.piper import models


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The model paths a head start began to load (nothing is loaded)."""
    paths: list[Path] = []
    monkeypatch.setattr(models, "_load_quietly", paths.append)
    monkeypatch.chdir(Path(__file__).parent)  # no oyez.yaml here
    return paths


def guess(config: Path | None = None, env: dict[str, str] | None = None, **args: str) -> bool:
    """Whether a head start was made for ``oyez say`` with these options."""
    thread = head_start(
        config, args.get("provider"), args.get("voice"), args.get("model"), env or {}
    )
    if thread is not None:
        thread.join()
    return thread is not None


def test_the_builtin_voice_starts_loading_with_no_configuration(started: list[Path]) -> None:
    assert guess()
    assert guess(provider="piper", voice=models.BUILTIN_VOICE)
    assert started == [models.builtin_model_path()] * 2


@pytest.mark.parametrize(
    ("yaml", "env", "args"),
    [
        ("", {}, {"voice": "en_GB-alba-medium"}),
        ("", {}, {"provider": "openai"}),
        ("default_provider: segmind\n", {}, {}),
        ("", {"OYEZ_DEFAULT_PROVIDER": "together"}, {}),
        ("default_voice: en_GB-alba-medium\n", {}, {}),
        ("providers: {piper: {default_voice: en_GB-alba-medium}}\n", {}, {}),
        ("", {"oyez_providers__piper__default_voice": "en_GB-alba-medium"}, {}),
        ("", {"OYEZ_PROVIDERS": '{"piper": {}}'}, {}),
        (
            "voices: {butler: {provider: piper, voice: en_GB-alba-medium}}\n",
            {},
            {"voice": "Butler"},
        ),
        ("default_provider: [not, a, name]\n", {}, {}),
        ("providers: [not a mapping]\n", {}, {}),
        ("key: [unclosed\n", {}, {}),
        ("- a list\n", {}, {}),
    ],
)
def test_no_guess_when_another_voice_may_speak_or_it_cannot_tell(
    started: list[Path], tmp_path: Path, yaml: str, env: dict[str, str], args: dict[str, str]
) -> None:
    config = tmp_path / "oyez.yaml"
    config.write_text(yaml, encoding="utf-8")
    assert not guess(config, env, **args)
    assert started == []


def test_the_file_is_found_as_the_configuration_finds_it(
    started: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "oyez.yaml").write_text("default_provider: segmind\n", encoding="utf-8")
    assert not guess(env={"OYEZ_CONFIG": str(tmp_path / "oyez.yaml")})
    assert not guess(env={"OYEZ_CONFIG": str(tmp_path / "missing.yaml")})  # load() says so
    monkeypatch.chdir(tmp_path)
    assert not guess()
    assert started == []


def test_the_provider_gets_the_model_the_head_start_loaded() -> None:
    thread = models.preload({}, None, None)
    assert thread is not None
    thread.join()
    path = models.builtin_model_path()
    ready = models._loaded[(path.resolve(), path.stat().st_mtime_ns, 0)]  # default threads
    assert models.load_model(path, models.config_path_of(path)) is ready


@pytest.mark.usefixtures("started")
def test_a_settled_head_start_writes_no_further_file() -> None:
    """``settle`` (before ``os._exit``) waits for a copy being written and keeps the thread from
    starting another: it takes the lock that writing holds, for good."""
    loading = models.preload({}, None, None)
    assert loading is not None
    loading.join()
    try:
        loading.settle()
        assert models.COPYING.locked()
        assert not models.COPYING.acquire(blocking=False)
    finally:
        models.COPYING.release()
