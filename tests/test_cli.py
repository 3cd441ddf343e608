"""The ``oyez`` command end to end, as a user runs it: a subprocess."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import main
from tests.support.asr import Transcriber, word_error_rate
from tests.support.probe import describe
from tests.support.sqlite import read_only_connect

TEXT = "The front door has been left open for ten minutes."


def oyez(
    *args: str, cwd: Path, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OYEZ_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )


def test_say_writes_announcement_ogg_and_reports(tmp_path: Path, transcriber: Transcriber) -> None:
    result = oyez("say", TEXT, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    output = tmp_path / "announcement.ogg"
    audio = output.read_bytes()
    assert "opus, 48000 Hz, stereo" in describe(audio)
    assert word_error_rate(TEXT, transcriber.transcribe(audio)) <= 0.2
    out = result.stdout
    assert f"Said: {TEXT}" in out
    assert "piper/en_US-joe-medium" in out
    assert "announcement.ogg" in out
    assert "duration" in out
    assert "model load" in out
    assert "synthesis" in out
    assert "transcode" in out
    assert not (tmp_path / "announcement.ogg.partial").exists()


def test_say_reads_stdin_and_picks_format_from_extension(tmp_path: Path) -> None:
    result = oyez("say", "-", "-o", "out/speaker.mp3", cwd=tmp_path, stdin="Hello from stdin.\n")
    assert result.returncode == 0, result.stderr
    assert describe((tmp_path / "out" / "speaker.mp3").read_bytes()).startswith("mp3")
    assert "Said: Hello from stdin." in result.stdout


def test_say_at_twice_the_speed_takes_half_the_time(tmp_path: Path) -> None:
    for name, speed in (("normal", "1"), ("fast", "2")):
        result = oyez("say", TEXT, "--speed", speed, "-o", f"{name}.wav", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    normal, fast = ((tmp_path / f"{n}.wav").stat().st_size for n in ("normal", "fast"))
    assert 0.45 < fast / normal < 0.75  # Piper's pauses and the file's edges shrink less


def test_say_format_without_output_names_the_file(tmp_path: Path) -> None:
    result = oyez(
        "say", "Hi there.", "--format", "wav", "--option", "length_scale=1.2", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "announcement.wav").read_bytes()[:4] == b"RIFF"


def test_say_to_standard_output(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot", "say", "Piped.", "-o", "-", "--format", "mp3"],
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("OYEZ_")},
    )
    assert result.returncode == 0, result.stderr
    assert describe(result.stdout).startswith("mp3")
    assert b"Said: Piped." in result.stderr


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (["say", ""], {}, "text is empty"),
        (["say", "x" * 30], {"OYEZ_MAX_TEXT_LENGTH": "20"}, "30 characters, the limit is 20"),
        (["say", "hi", "--voice", "nobody"], {}, "unknown voice 'nobody'"),
        (["say", "hi", "--provider", "segmint"], {}, "unknown provider 'segmint'"),
        (["say", "hi", "--model", "big"], {}, "unknown model 'big'"),
        (["say", "hi", "--option", "length_scale=9"], {}, "length_scale: Input should be"),
        (["say", "hi", "--option", "pitch=2"], {}, "pitch: unknown option"),
        (["say", "hi", "--option", "pitch"], {}, "must look like KEY=VALUE"),
        (["say", "hi", "--speed", "3"], {}, "speed: Input should be less than or equal to 2"),
        (["say", "hi", "-o", "x.flac"], {}, "cannot tell the format"),
        (["say", "hi", "-o", "x.ogg", "--format", "mp3"], {}, "does not match"),
        (["say", "hi", "--format", "aiff"], {}, "invalid choice"),
        (["say", "hi"], {"OYEZ_AUDIO__LOUDNESS_TARGET_LUFS": "loud"}, "loudness_target_lufs"),
        (["--config", "missing.yaml", "say", "hi"], {}, "missing.yaml does not exist"),
        (["voices", "--provider", "piperr"], {}, "did you mean 'piper'"),
    ],
)
def test_bad_input_exits_2_naming_the_problem(
    tmp_path: Path, args: list[str], env: dict[str, str], words: str
) -> None:
    result = oyez(*args, cwd=tmp_path, env=env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert words in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "announcement.ogg").exists()


@pytest.mark.parametrize(
    ("argv", "torn_down"), [(["say", "Hello.", "-o", "hello.ogg"], False), (["voices"], True)]
)
def test_say_skips_the_teardown_once_its_output_is_complete(
    tmp_path: Path, argv: list[str], torn_down: bool
) -> None:
    """``oyez say`` leaves with ``os._exit`` (bot.cli.run): its report and file are complete;
    the other commands exit normally (their ``atexit`` work runs)."""
    code = (
        "import atexit, sys\nfrom bot.cli import run\n"
        "atexit.register(lambda: print('torn down', file=sys.stderr))\n"
        f"sys.argv = ['oyez', *{argv!r}]\nrun()"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("OYEZ_")},
    )
    assert result.returncode == 0, result.stderr
    assert ("torn down" in result.stderr) is torn_down
    if not torn_down:
        assert result.stdout.startswith("Said: Hello.\n")
        assert result.stdout.endswith(")\n")  # the last line, whole
        assert "opus, 48000 Hz, stereo" in describe((tmp_path / "hello.ogg").read_bytes())
        assert sorted(p.name for p in tmp_path.iterdir() if "hello" in p.name) == ["hello.ogg"]


def test_unknown_config_key_exits_2(tmp_path: Path) -> None:
    (tmp_path / "oyez.yaml").write_text("max_text_lenght: 5\n")
    result = oyez("say", "hi", cwd=tmp_path)
    assert result.returncode == 2
    assert "max_text_lenght: unknown key" in result.stderr


def test_failure_exits_1(tmp_path: Path) -> None:
    broken = tmp_path / "voices"
    broken.mkdir()
    (broken / "broken.onnx").write_bytes(b"not a model")
    (broken / "broken.onnx.json").write_text(
        json.dumps({"audio": {"sample_rate": 22050}, "language": {"code": "en_US"}})
    )
    result = oyez(
        "say", "hi", "--voice", "broken", cwd=tmp_path, env={"OYEZ_DATA_DIR": str(tmp_path)}
    )
    assert result.returncode == 1
    assert "cannot load voice broken" in result.stderr


def test_voices_lists_the_local_voice(tmp_path: Path) -> None:
    result = oyez("voices", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "* piper" in result.stdout
    assert "en_US-joe-medium" in result.stdout
    listed = oyez("voices", "--json", "--provider", "piper", cwd=tmp_path)
    voices = [json.loads(line) for line in listed.stdout.splitlines()]
    assert voices == [
        {
            "provider": "piper",
            "model": "en_US-joe-medium",
            "id": "en_US-joe-medium",
            "name": "joe (medium)",
            "language": "en_US",
            "default": True,
        }
    ]


def test_voices_search_lists_the_matching_voices_only(tmp_path: Path) -> None:
    found = oyez("voices", "--search", "JOE", cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert [line.split()[2] for line in found.stdout.splitlines()] == ["en_US-joe-medium"]
    none = oyez("voices", "--search", "klingon", cwd=tmp_path)
    assert none.returncode == 1
    assert none.stdout == ""
    assert "no voice matches 'klingon'" in none.stderr


def test_say_in_a_read_only_data_folder_names_it_and_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    monkeypatch.setattr(sqlite3, "connect", read_only_connect(data))  # read-only, even for root
    for name in [k for k in os.environ if k.startswith("OYEZ_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("OYEZ_DATA_DIR", str(data))
    monkeypatch.chdir(tmp_path)
    assert main(["say", "hi", "-o", str(tmp_path / "hi.wav")]) == 1
    error = capsys.readouterr().err
    assert f"cannot write {data}" in error
    assert "writable" in error
    assert "OYEZ_DATA_DIR" in error
    assert not (tmp_path / "hi.wav").exists()
