"""A speaking rate (``SpeechRequest.speed``) in each provider's own terms, or ignored where the
provider's API has none (Together's page documents no rate option; Segmind's only for
OpenVoice, "speed ... Range: 0.5 - 2")."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.ops import config
from bot.providers.base import ProviderRegistry
from bot.speech import Voice

KEYS = {"api_key": "k", "base_url": "http://127.0.0.1:9"}


@pytest.fixture
def registry(tmp_path: Path) -> ProviderRegistry:
    settings = config.load(
        data_dir=tmp_path,
        providers={
            "piper": {"length_scale": 1.2},
            "segmind": KEYS,
            "together": KEYS,
            "openai": {**KEYS, "base_url": "http://127.0.0.1:9/v1"},
        },
    )
    return ProviderRegistry.default(settings)


@pytest.mark.parametrize(
    ("provider", "model", "options"),
    [
        ("piper", "en_US-joe-medium", {"length_scale": 0.6}),  # the configured 1.2, twice as fast
        ("openai", "tts-1", {"speed": 2.0}),
        ("segmind", "openvoice", {"speed": 2.0}),
        ("segmind", "chatterbox-tts", None),
        ("together", "hexgrad/Kokoro-82M", None),
        ("together", "cartesia/sonic", None),
    ],
)
def test_a_rate_in_the_providers_own_terms(
    registry: ProviderRegistry, provider: str, model: str, options: dict[str, float] | None
) -> None:
    chosen = registry.get(provider)
    voice = Voice(provider, model, "v", "v")
    assert chosen.rate_options(voice, 2.0) == options
    if options is not None:  # and they are options the provider takes
        assert chosen.validate_options(voice, options).items() >= options.items()
