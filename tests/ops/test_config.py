from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.ops import config
from bot.providers.base import ProviderRegistry
from tests.support.paths import EXAMPLE_CONFIG


def test_defaults_without_file_or_environment() -> None:
    settings = config.load()
    assert settings.data_dir == Path("data")
    assert settings.default_provider == "piper"
    assert settings.max_text_length == 1000
    assert settings.audio.loudness_target_lufs == -16.0
    assert settings.audio.normalize_loudness is True


def test_yaml_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "custom.yaml"
    path.write_text("max_text_length: 200\naudio:\n  loudness_target_lufs: -20\n")
    settings = config.load(path)
    assert settings.max_text_length == 200
    assert settings.audio.loudness_target_lufs == -20.0


def test_oyez_yaml_in_the_working_directory_is_found(tmp_path: Path) -> None:
    (tmp_path / "oyez.yaml").write_text("default_voice: somebody\n")
    assert config.load().default_voice == "somebody"


def test_environment_beats_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "oyez.yaml"
    path.write_text("max_text_length: 200\naudio:\n  loudness_target_lufs: -20\n")
    monkeypatch.setenv("OYEZ_MAX_TEXT_LENGTH", "300")
    monkeypatch.setenv("OYEZ_AUDIO__LOUDNESS_TARGET_LUFS", "-18")
    monkeypatch.setenv("OYEZ_DATA_DIR", str(tmp_path / "elsewhere"))
    settings = config.load(path)
    assert settings.max_text_length == 300
    assert settings.audio.loudness_target_lufs == -18.0
    assert settings.data_dir == tmp_path / "elsewhere"


def test_provider_sections_nest_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OYEZ_PROVIDERS__PIPER__LENGTH_SCALE", "1.3")
    assert config.load().provider_section("piper")["length_scale"] == "1.3"
    assert config.load().provider_section("nobody") == {}


def test_oyez_config_variable_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "elsewhere.yaml"
    path.write_text("default_provider: other\n")
    monkeypatch.setenv("OYEZ_CONFIG", str(path))
    assert config.load().default_provider == "other"


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "oyez.yaml"
    path.write_text("max_text_lenght: 10\naudio:\n  loudnes: 3\n")
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    message = str(caught.value)
    assert "max_text_lenght: unknown key" in message
    assert "audio.loudnes: unknown key" in message
    assert str(path) in message


def test_out_of_range_and_wrong_type_are_named(tmp_path: Path) -> None:
    path = tmp_path / "oyez.yaml"
    path.write_text("max_text_length: many\naudio:\n  loudness_target_lufs: 3\n")
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    message = str(caught.value)
    assert "max_text_length: Input should be a valid integer" in message
    assert "audio.loudness_target_lufs: Input should be less than or equal to -5" in message


def test_values_are_never_echoed(tmp_path: Path) -> None:
    path = tmp_path / "oyez.yaml"
    path.write_text("max_text_length: sk-very-secret-value\n")
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert "sk-very-secret-value" not in str(caught.value)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.yaml")


def test_broken_yaml_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "oyez.yaml"
    path.write_text("audio: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(path)


def test_yaml_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "oyez.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        config.load(path)


def test_example_configuration_is_valid() -> None:
    example = EXAMPLE_CONFIG
    settings = config.load(example)
    assert settings.default_provider == "piper"
    registry = ProviderRegistry.default(settings)
    # every provider section in the example is valid for its provider, and every built-in
    # provider is documented there
    assert set(settings.providers) == set(registry.names())
    for name in settings.providers:
        assert registry.get(name).name == name
    from integrations.discord.settings import DiscordSettings

    assert DiscordSettings.from_settings(settings).token is None
