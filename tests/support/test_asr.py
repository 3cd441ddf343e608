"""The word error rate the listening tests use."""

from __future__ import annotations

import pytest

from tests.support.asr import word_error_rate


@pytest.mark.parametrize(
    ("heard", "expected"),
    [
        ("Someone is at the front door.", 0.0),
        ("Some one is at the front door.", 0.0),  # spelt apart: not misheard
        ("Someone is at the frontdoor.", 0.0),  # spelt together
        ("Someone is at the back door.", 1 / 6),
        ("Someone at the front door.", 1 / 6),
        ("10. Someone is at the front door.", 1 / 6),
        ("Some one was at the back door.", 2 / 6),
        ("", 1.0),
    ],
)
def test_word_error_rate(heard: str, expected: float) -> None:
    assert word_error_rate("Someone is at the front door.", heard) == pytest.approx(expected)
