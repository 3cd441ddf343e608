"""The name said in "<name> said" when a member set no ``/nick``: their display name cleaned."""

from __future__ import annotations

import pytest

from integrations.discord.names import clean_name


@pytest.mark.parametrize(
    ("display", "said"),
    [
        ("Alice", "Alice"),
        ("🎉 Party_Bob 🎉", "Party Bob"),
        ("★ Zoë ★", "Zoë"),
        ("~~xX_Sniper_Xx~~", "xX Sniper Xx"),
        ("O'Neil-Smith", "O'Neil-Smith"),
        ("🎉✨", ""),
    ],
)
def test_emoji_and_symbols_are_not_said(display: str, said: str) -> None:
    assert clean_name(display) == said
