import pytest

from integrations.discord.reading import speakable


@pytest.mark.parametrize(
    ("content", "attachments", "said"),
    [
        (
            "Look at https://www.Example.com/a/b?c=1 please",
            [],
            "Look at a link to example.com please",
        ),
        ("<https://docs.python.org/3/> is good", [], "a link to docs.python.org is good"),
        ("nice <:party_parrot:1234> one", [], "nice party parrot one"),
        ("see this", ["cat.png"], "see this, with an attachment named cat.png"),
        ("", ["a.png", "b.pdf", "c.txt"], "3 attachments: a.png, b.pdf and c.txt"),
        ("  lots   of\n\nspace ", [], "lots of space"),
        ("", [], ""),
    ],
)
def test_messages_become_speech(content: str, attachments: list[str], said: str) -> None:
    assert speakable(content, attachments, 300) == said


def test_long_messages_are_cut_at_a_word() -> None:
    assert speakable("one two three four five", [], 12) == "one two, and so on"
