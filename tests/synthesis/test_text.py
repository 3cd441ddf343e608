import pytest

from bot.errors import EmptyText, TextTooLong
from bot.synthesis.text import normalize_text


def test_control_and_format_characters_are_removed() -> None:
    text = "Dinner\x00 is\x07 ready\u200b now\u202e."
    assert normalize_text(text, 100) == "Dinner is ready now."


def test_whitespace_collapses_to_single_spaces() -> None:
    assert normalize_text("  The\tdoor\n\n  is   open.\r\n", 100) == "The door is open."


def test_unicode_is_composed() -> None:
    assert normalize_text("Cafe\u0301", 100) == "Caf\u00e9"


def test_sound_tags_pass_through_untouched() -> None:
    text = "Well <sigh> that was long [laugh] indeed."
    assert normalize_text(text, 100) == text


@pytest.mark.parametrize("text", ["", "   ", "\x00\x01\t\n", "\u200b\u200c"])
def test_nothing_speakable_is_an_error(text: str) -> None:
    with pytest.raises(EmptyText, match="empty"):
        normalize_text(text, 100)


def test_over_long_text_names_length_and_limit() -> None:
    with pytest.raises(TextTooLong) as caught:
        normalize_text("a" * 1001, 1000)
    assert caught.value.length == 1001
    assert "1001 characters" in str(caught.value)
    assert "limit is 1000" in str(caught.value)


def test_limit_applies_after_cleaning() -> None:
    assert normalize_text("ab" + " " * 50 + "cd", 5) == "ab cd"
