import json
from pathlib import Path
from typing import Any

import pytest

from bot.configschema import reference_rows
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


@pytest.mark.parametrize("value", ["-1", "lots"])
def test_a_bad_cache_memory_size_names_the_field(tmp_path: Path, value: str) -> None:
    path = tmp_path / "oyez.yaml"
    path.write_text(f"cache:\n  memory_mb: {value}\n")
    with pytest.raises(ConfigError, match=r"cache\.memory_mb"):
        config.load(path)


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


#: A value for each environment variable the README marks JSON (when its default is empty).
JSON_SAMPLES: dict[str, Any] = {
    "providers.segmind.v2_models": ["openvoice"],
    "providers.segmind.timeout_s": {"chatterbox-turbo-tts": 6},
    "providers.google.prices": {"Neural2": 12.8},
    "providers.polly.prices": {"neural": 12.0},
    "voices.<name>.options": {"speed": 1.2},
    "credits.costs": {"segmind/orpheus-3b-0.1": 0.1},
    "budgets.providers": {"segmind": 1.5},
    "pronunciations": {"HA": "Home Assistant"},
    "budgets.guilds": {"123456789012345678": 2.0},
    "budgets.users": {"discord:123456789012345678": 0.5},
    "discord.sync_guilds": [123456789012345678],
    "announce.media_players": ["media_player.kitchen"],
    "announce.chimes": {"doorbell": "https://chimes.example/ding.mp3"},
    "announce.chime_hosts": ["chimes.example"],
    "schedules[]": [{"name": "tea", "cron": "0 17 * * *", "message": "Tea.", "discord": "1/2"}],
}


def _json_rows() -> list[tuple[str, str]]:
    """(key, variable) of every README row marked JSON, one per variable."""
    rows: dict[str, str] = {}
    for row in reference_rows():
        if "JSON" in row.env_note:
            key = row.key.split("[]")[0] + "[]" if "[]" in row.key else row.key
            rows.setdefault(row.env, key)
    return [(key, env) for env, key in rows.items()]


def _at(settings: config.Settings, key: str) -> Any:
    value: Any = settings.model_dump(mode="json")
    for part in key.removesuffix("[]").split("."):
        value = value[part]
    return value


@pytest.mark.parametrize(("key", "env"), _json_rows())
def test_every_json_environment_variable_is_read(
    key: str, env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = next(r.default for r in reference_rows() if r.key.startswith(key.removesuffix("[]")))
    fallback = json.loads(default.strip("`")) if default.startswith("`") else None
    sample = JSON_SAMPLES.get(key, fallback or None)
    assert sample, f"{env} is marked JSON: give it a sample in JSON_SAMPLES"
    if "<NAME>" in env:
        env = env.replace("<NAME>", "GRANDMA")
        key = key.replace("<name>", "grandma")
        monkeypatch.setenv("OYEZ_VOICES__GRANDMA__PROVIDER", "piper")
    monkeypatch.setenv(env, json.dumps(sample))
    settings = config.load()
    got = _at(settings, key)
    if key == "schedules[]":
        assert [s["name"] for s in got] == ["tea"]
    elif isinstance(sample, dict):
        assert {k: got[k] for k in sample} == sample
    else:
        assert got == sample
    if key.startswith("providers."):  # and the provider takes it
        assert ProviderRegistry.default(settings).get(key.split(".")[1]).name
    if key.startswith("discord."):
        from integrations.discord.settings import DiscordSettings

        assert DiscordSettings.from_settings(settings).sync_guilds == sample


def test_a_raw_section_value_that_is_not_json_stays_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OYEZ_PROVIDERS__OPENAI__VOICE", "[not json")
    monkeypatch.setenv("OYEZ_PROVIDERS__OPENAI__MODEL", '"quoted"')
    section = config.load().provider_section("openai")
    assert section == {"voice": "[not json", "model": '"quoted"'}
