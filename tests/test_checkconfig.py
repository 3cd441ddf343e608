"""``oyez check-config``, the configuration's JSON Schema and the README's reference table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from bot import checkconfig, cli, configschema
from bot.ops import config
from tests.support.paths import ROOT

EXAMPLE = ROOT / "config" / "oyez.example.yaml"
FAKE_KEY = "sk-fake-checkconfig-4f1d2c9a7e"
FAKE_TOKEN = "fake-discord-token-0b7e51d3"
FAKE_HA_TOKEN = "fake-ha-token-93c0aa51"
REGENERATE = "run: make config-docs (python -m bot.checkconfig --write-schema --write-reference)"


def _check(
    capsys: pytest.CaptureFixture[str], *args: str, config_text: str | None = None
) -> tuple[int, str, str]:
    """Run ``oyez check-config`` (in process) on ``config_text`` written to ./oyez.yaml."""
    if config_text is not None:
        Path("oyez.yaml").write_text(config_text, encoding="utf-8")
    status = cli.main(["check-config", *args])
    out, err = capsys.readouterr()
    return status, out, err


def _effective(out: str) -> dict[str, Any]:
    assert out.rstrip().endswith("configuration OK")
    data = yaml.safe_load(out.rstrip().removesuffix("configuration OK"))
    assert isinstance(data, dict)
    return data


# --- a valid configuration ------------------------------------------------------------------


def test_valid_configuration_prints_the_effective_one_and_exits_0(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OYEZ_AUDIO__LOUDNESS_TARGET_LUFS", "-18")
    status, out, err = _check(
        capsys,
        config_text=f"data_dir: {tmp_path / 'data'}\n"
        "audio: {loudness_target_lufs: -20, mp3_bitrate_kbps: 192}\n"
        "providers:\n  piper: {length_scale: 1.25}\n"
        "discord: {prefetch: 3}\n",
    )
    assert (status, err) == (0, "")
    effective = _effective(out)
    assert effective["audio"]["loudness_target_lufs"] == -18.0  # the environment wins
    assert effective["audio"]["mp3_bitrate_kbps"] == 192
    assert effective["audio"]["true_peak_dbtp"] == -1.5  # defaults are shown
    assert effective["providers"]["piper"]["length_scale"] == 1.25
    # Integration sections are shown as their models validated them, defaults included.
    assert effective["discord"]["prefetch"] == 3
    assert effective["discord"]["idle_timeout_s"] == 300.0
    assert effective["homeassistant"]["event_type"] == "oyez_announce"


def test_effective_configuration_is_what_load_reads(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OYEZ_MAX_TEXT_LENGTH", "321")
    text = "default_voice: somebody\nfallback: [piper]\ncache: {max_mb: 42}\n"
    status, out, _ = _check(capsys, config_text=text)
    assert status == 0
    loaded = checkconfig.masked(config.load(Path("oyez.yaml")))
    effective = _effective(out)
    for key in ("default_voice", "max_text_length", "fallback", "cache", "audio", "http"):
        assert effective[key] == loaded[key], key
    assert effective["max_text_length"] == 321


def test_the_example_configuration_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = _check(capsys, "--config", str(EXAMPLE))
    assert status == 0, err
    assert "configuration OK" in out


def test_config_option_before_or_after_the_command(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "elsewhere.yaml"
    path.write_text("max_text_length: 0\n")
    for argv in (["--config", str(path), "check-config"], ["check-config", "--config", str(path)]):
        assert cli.main(argv) == 2
        assert "max_text_length" in capsys.readouterr().err


def test_missing_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, out, err = _check(capsys, "--config", str(tmp_path / "nope.yaml"))
    assert (status, out) == (2, "")
    assert "nope.yaml does not exist" in err


# --- secrets ---------------------------------------------------------------------------------


def test_secrets_never_appear_and_are_masked(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OYEZ_PROVIDERS__SEGMIND__API_KEY", FAKE_KEY)
    monkeypatch.setenv("OYEZ_DISCORD__TOKEN", FAKE_TOKEN)
    status, out, err = _check(
        capsys,
        config_text="homeassistant:\n"
        "  url: http://homeassistant.local:8123\n"
        f"  token: {FAKE_HA_TOKEN}\n"
        "providers:\n"
        "  kokoro: {type: openai, base_url: 'http://127.0.0.1:8880/v1', "
        f"api_key: {FAKE_KEY}x}}\n"
        f"http: {{api_token: {FAKE_TOKEN}y}}\n",
    )
    assert status == 0, err
    for secret in (FAKE_KEY, FAKE_TOKEN, FAKE_HA_TOKEN):
        assert secret not in out + err
    effective = _effective(out)
    assert effective["providers"]["segmind"]["api_key"] == "********"
    assert effective["providers"]["kokoro"]["api_key"] == "********"
    assert effective["providers"]["kokoro"]["type"] == "openai"
    assert effective["discord"]["token"] == "********"
    assert effective["homeassistant"]["token"] == "********"
    assert effective["http"]["api_token"] == "********"
    assert effective["providers"]["together"]["api_key"] is None  # unset stays visibly unset


def test_secrets_are_not_echoed_in_problems(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OYEZ_DISCORD__TOKN", FAKE_TOKEN)
    monkeypatch.setenv("OYEZ_PROVIDERS__SEGMIND__API_KEY", FAKE_KEY)
    status, out, err = _check(
        capsys, config_text=f"providers:\n  together: {{api_kee: {FAKE_KEY}z}}\nlog_level: LOUD\n"
    )
    assert status == 2
    assert "discord.tokn: unknown key; did you mean 'token'? (set in OYEZ_DISCORD__TOKN)" in err
    assert "providers.together.api_kee: unknown key; did you mean 'api_key'?" in err
    assert FAKE_TOKEN not in out + err
    assert FAKE_KEY not in out + err
    assert out == ""  # no effective configuration while a secret might sit under a typo


def test_masked_hides_values_under_secret_looking_keys() -> None:
    data = {
        "token": "a",
        "nested": {"api_key": "b", "client_secret": "c", "password": "d", "fine": "e"},
        "tokens": None,
    }
    assert checkconfig.masked(data) == {
        "token": "********",
        "nested": {
            "api_key": "********",
            "client_secret": "********",
            "password": "********",
            "fine": "e",
        },
        "tokens": None,
    }


def test_a_section_without_its_integration_model_is_shown_masked(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(
        configschema.SECTION_MODELS,
        "homeassistant",
        "integrations.homeassistant.not_there_yet:HomeAssistantSettings",
    )
    assert configschema.section_model("homeassistant") is None
    status, out, err = _check(
        capsys, config_text=f"homeassistant: {{url: 'http://ha:8123', token: {FAKE_HA_TOKEN}}}\n"
    )
    assert status == 0, err
    assert FAKE_HA_TOKEN not in out
    assert _effective(out)["homeassistant"] == {"url": "http://ha:8123", "token": "********"}


# --- each kind of problem --------------------------------------------------------------------

PROBLEMS = [
    pytest.param(
        "max_text_lenght: 5\n",
        "max_text_lenght: unknown key; did you mean 'max_text_length'? (set in oyez.yaml)",
        id="unknown-top-level-key",
    ),
    pytest.param(
        "audio: {loudness_target_luf: -18}\n",
        "audio.loudness_target_luf: unknown key; did you mean 'loudness_target_lufs'?",
        id="unknown-nested-key",
    ),
    pytest.param(
        "announce: {quiet_hours: {start: '22:00', end: '07:00', strat: '22:00'}}\n",
        "announce.quiet_hours.strat: unknown key; did you mean 'start'?",
        id="unknown-key-in-optional-model",
    ),
    pytest.param(
        "rate_limits: {providers: {segmind: {max_concurent: 2}}}\n",
        "rate_limits.providers.segmind.max_concurent: unknown key; did you mean 'max_concurrent'?",
        id="unknown-key-in-mapping-of-models",
    ),
    pytest.param(
        "providers: {segmind: {poll: {firts_s: 1}}}\n",
        "providers.segmind.poll.firts_s: unknown key; did you mean 'first_s'? (set in oyez.yaml)",
        id="unknown-key-in-provider-section",
    ),
    pytest.param(
        "providers: {kokoro: {type: openai, base_urll: 'http://127.0.0.1:1/v1'}}\n",
        "providers.kokoro.base_urll: unknown key; did you mean 'base_url'?",
        id="unknown-key-in-typed-provider-instance",
    ),
    pytest.param(
        "discord: {idle_timeout: 30}\n",
        "discord.idle_timeout: unknown key; did you mean 'idle_timeout_s'?",
        id="unknown-key-in-discord",
    ),
    pytest.param(
        "homeassistant: {urll: 'http://ha:8123'}\n",
        "homeassistant.urll: unknown key; did you mean 'url'?",
        id="unknown-key-in-homeassistant",
    ),
    pytest.param(
        "schedules:\n  - {name: bins, cron: '0 19 * * 1', message: Bins, gracee_s: 5}\n",
        "schedules[0].gracee_s: unknown key; did you mean 'grace_s'?",
        id="unknown-key-in-a-schedule",
    ),
    pytest.param(
        "max_text_length: lots\n",
        "max_text_length: Input should be a valid integer",
        id="wrong-type",
    ),
    pytest.param(
        "discord: {sync_guilds: [general]}\n",
        "discord.sync_guilds[0]: Input should be a valid integer",
        id="wrong-type-in-discord",
    ),
    pytest.param(
        "audio: {mp3_sample_rate: 22050, mp3_bitrate_kbps: 192}\n",
        "audio.mp3_sample_rate 22050 carries at most 160 kbit/s",
        id="mp3-bitrate-over-mpeg2",
    ),
    pytest.param(
        "audio: {mp3_sample_rate: 22000}\n",
        "audio.mp3_sample_rate: Input should be 8000, 11025",
        id="mp3-rate-mp3-has-not",
    ),
    pytest.param(
        "audio: {mp3_bitrate_kbps: 100}\n",
        "audio.mp3_bitrate_kbps: Input should be greater than or equal to 128",
        id="out-of-range",
    ),
    pytest.param(
        "providers: {piper: {length_scale: 9}}\n",
        "providers.piper.length_scale: Input should be less than or equal to 4",
        id="out-of-range-in-provider",
    ),
    pytest.param(
        "time_zone: Europe/Pari\n",
        "time_zone: unknown time zone 'Europe/Pari' (an IANA name such as Europe/Paris); "
        "did you mean 'Europe/Paris'?",
        id="unknown-time-zone",
    ),
    pytest.param(
        "providers: {pipr: {length_scale: 1.1}}\n",
        "providers.pipr: unknown provider; did you mean 'piper'?",
        id="unknown-provider-section",
    ),
    pytest.param(
        "default_provider: segmnd\n",
        "default_provider: unknown provider; did you mean 'segmind'?",
        id="unknown-default-provider",
    ),
    pytest.param(
        "fallback: [piper, togeter]\n",
        "fallback[1]: 'togeter' is neither a provider nor a named voice; did you mean 'together'?",
        id="unknown-fallback",
    ),
    pytest.param(
        "providers: {piper: {default_voice: en_US-nobody-medium}}\n",
        "providers.piper.default_voice: no Piper voice 'en_US-nobody-medium'",
        id="missing-default-voice",
    ),
]


@pytest.mark.parametrize(("text", "expected"), PROBLEMS)
def test_each_problem_is_named_with_exit_2(
    capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    status, out, err = _check(capsys, config_text=text)
    assert status == 2
    assert out == ""
    assert expected in err
    assert err.startswith("oyez check-config: 1 problem in oyez.yaml")


def test_missing_voice_folder_is_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "no-such-voices"
    status, _, err = _check(
        capsys, config_text=f"providers: {{piper: {{voices_dir: {missing}}}}}\n"
    )
    assert status == 2
    assert f"providers.piper.voices_dir: folder {missing} does not exist (set in oyez.yaml)" in err


def test_unreadable_voice_files_are_named(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    voices = tmp_path / "data" / "voices"  # the default folder, <data_dir>/voices
    voices.mkdir(parents=True)
    (voices / "en_GB-lonely-low.onnx").write_bytes(b"not a model")  # no .onnx.json
    (voices / "en_GB-orphan-low.onnx.json").write_text("{}")  # no .onnx
    status, _, err = _check(capsys, config_text=f"data_dir: {tmp_path / 'data'}\n")
    assert status == 2
    assert f"providers.piper.voices_dir: voice {voices / 'en_GB-lonely-low.onnx'}: no usable" in err
    assert "en_GB-orphan-low.onnx.json has no en_GB-orphan-low.onnx" in err


def test_problems_from_the_environment_name_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OYEZ_AUDIO__DISCORD_BITRATE_KBPS", "fast")
    monkeypatch.setenv("OYEZ_DATADIR", "/srv/oyez")
    monkeypatch.setenv("OYEZ_HOMEASSISTANT__REQUEST_TIMEOUT_S", "0")
    status, _, err = _check(capsys)
    assert status == 2
    assert (
        "audio.discord_bitrate_kbps: Input should be a valid integer, unable to parse string as "
        "an integer (set in OYEZ_AUDIO__DISCORD_BITRATE_KBPS)"
    ) in err
    assert "OYEZ_DATADIR: sets no setting; did you mean 'OYEZ_DATA_DIR'?" in err
    assert "homeassistant.request_timeout_s: Input should be greater than 0 (set in OYEZ_" in err
    assert "3 problems in the OYEZ_* environment" in err


def test_every_problem_is_named_in_one_run(capsys: pytest.CaptureFixture[str]) -> None:
    """Problems in the core settings do not hide those in the integrations' sections."""
    status, _, err = _check(
        capsys,
        config_text="audio: {loudness_target_luf: -18}\n"
        "max_text_length: 0\n"
        "providers: {piper: {lenght_scale: 1.2}}\n"
        "discord: {tokn: x}\n",
    )
    assert status == 2
    assert "4 problems" in err
    for key in (
        "audio.loudness_target_luf",
        "max_text_length",
        "providers.piper.lenght_scale",
        "discord.tokn",
    ):
        assert f"  {key}: " in err


# --- the JSON Schema and the reference -------------------------------------------------------


def test_committed_schema_is_up_to_date() -> None:
    committed = configschema.SCHEMA_FILE.read_text(encoding="utf-8")
    assert committed == configschema.schema_text(), (
        f"config/oyez.schema.json is stale; {REGENERATE}"
    )


def test_readme_reference_is_up_to_date() -> None:
    readme = configschema.README_FILE.read_text(encoding="utf-8")
    assert readme == configschema.with_reference(readme), (
        f"README.md's configuration reference is stale; {REGENERATE}"
    )


def test_schema_command_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _check(capsys, "--schema")
    assert status == 0
    assert json.loads(out) == configschema.configuration_schema()


def test_example_points_editors_at_the_schema() -> None:
    first = EXAMPLE.read_text(encoding="utf-8").splitlines()[0]
    assert first == "# yaml-language-server: $schema=./oyez.schema.json"
    assert (EXAMPLE.parent / "oyez.schema.json").is_file()


def test_schema_accepts_the_example_and_completes_integration_sections() -> None:
    schema = json.loads(configschema.SCHEMA_FILE.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    assert list(validator.iter_errors(yaml.safe_load(EXAMPLE.read_text()))) == []
    properties = schema["properties"]
    defs = schema["$defs"]

    def keys(node: dict[str, Any]) -> set[str]:
        return set(defs[node["$ref"].rsplit("/", 1)[-1]]["properties"])

    assert {"token", "idle_timeout_s", "read_messages"} <= keys(properties["discord"])
    assert {"url", "token", "event_type"} <= keys(properties["homeassistant"])
    assert {"voices_dir", "length_scale"} <= keys(properties["providers"]["properties"]["piper"])
    assert {"name", "cron", "message"} <= keys(properties["schedules"]["items"])
    good = {"providers": {"kokoro": {"type": "openai", "base_url": "http://127.0.0.1:1/v1"}}}
    assert list(validator.iter_errors(good)) == []
    for bad in (
        {"discord": {"tokn": "x"}},
        {"providers": {"piper": {"lenght_scale": 1}}},
        {"providers": {"kokoro": {"base_url": "http://127.0.0.1:1/v1"}}},  # no type
        {"audio": {"mp3_bitrate_kbps": 100}},
    ):
        assert list(validator.iter_errors(bad)), bad


def test_reference_lists_every_key_with_its_variable_and_default() -> None:
    rows = {row.key: row for row in configschema.reference_rows()}
    for name in config.Settings.model_fields:
        assert any(key == name or key.startswith((f"{name}.", f"{name}[]")) for key in rows), name
    assert rows["data_dir"].env == "OYEZ_DATA_DIR"
    assert rows["data_dir"].default == "`data`"
    assert rows["audio.loudness_target_lufs"].env == "OYEZ_AUDIO__LOUDNESS_TARGET_LUFS"
    assert rows["audio.loudness_target_lufs"].default == "`-16.0`"
    assert rows["fallback"].default == '`["piper"]`'
    assert rows["fallback"].env_note == "(JSON)"
    assert rows["discord.token"].env == "OYEZ_DISCORD__TOKEN"
    assert rows["providers.piper.voices_dir"].env == "OYEZ_PROVIDERS__PIPER__VOICES_DIR"
    assert rows["providers.piper.default_voice"].default == "`en_US-joe-medium`"
    assert rows["voices.<name>.provider"].default == "required"
    assert "providers.<name>" in rows
    # Meanings come from the example file's comments.
    assert rows["audio.ffmpeg_path"].meaning.startswith("ffmpeg binary.")


def test_every_key_of_the_reference_says_what_it_means() -> None:
    """From the example file's comment, else the field's description: no blank row."""
    blank = [row.key for row in configschema.reference_rows() if not row.meaning.strip()]
    assert blank == []


def test_example_comments_skip_commented_out_examples() -> None:
    text = (
        "# Top.\n"
        "section:\n"
        "  first: 1  # inline\n"
        "  #  example: {x: 1}\n"
        "  # About second.\n"
        "  second: 2\n"
        "\n"
        "  third: 3\n"
    )
    assert configschema.example_comments(text) == {
        "section": "Top.",
        "section.first": "inline",
        "section.second": "About second.",
    }
