"""What a chat message sounds like: the text cleanup real Discord chat needs before it is read.

In order: code blocks become "a code block", spoilers "spoiler" (their text is not said),
links "a link to example.com", custom emoji their name, mentions of members, roles and channels
the names given, Unicode emoji their name (the ``emoji`` package's English CLDR names, skin
tones left out) or nothing, a letter repeated three times or more twice ("sooooo" → "soo") and
other symbols at most three times, whitespace collapsed; then a message over the limit is cut
at a word boundary, and attachments are named.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

import emoji as emoji_names

__all__ = ["CHARS_PER_SECOND", "EmojiMode", "chars_for", "speakable"]

#: Characters said in a second at speed 1, on the low side of read English (about 160 words a
#: minute): what turns a length cap in seconds into one in characters.
CHARS_PER_SECOND = 14.0

EmojiMode = Literal["name", "drop"]

_CODE_BLOCK = re.compile(r"```.*?(?:```|$)", re.DOTALL)
_SPOILER = re.compile(r"\|\|.+?\|\|", re.DOTALL)
_URL = re.compile(r"<?https?://(?:www\.)?([^/\s>:?#]+)[^\s>]*>?", re.IGNORECASE)
_CUSTOM_EMOJI = re.compile(r"<a?:(\w+):\d+>")
_MENTION = re.compile(r"<(@!?|@&|#)(\d+)>")
_REPEATED_LETTER = re.compile(r"([^\W\d_])\1{2,}")  # a double letter is spelling
_REPEATED_SYMBOL = re.compile(r"([^\w\s])\1{3,}")
_SKIN_TONE = re.compile(r"_(?:medium-light|medium-dark|light|medium|dark)_skin_tone")
_UNSAID = {"@!": "someone", "@": "someone", "@&": "a role", "#": "a channel"}


def _emoji_name(chars: str, data: dict[str, Any]) -> str:
    del chars  # the data names it
    name = _SKIN_TONE.sub("", str(data.get("en", ""))).strip(":")
    return f" {name.replace('_', ' ')} "


def _attachments(names: list[str]) -> str:
    if not names:
        return ""
    if len(names) == 1:
        return f"an attachment named {names[0]}"
    return f"{len(names)} attachments: " + ", ".join(names[:-1]) + f" and {names[-1]}"


def chars_for(seconds: float, speed: float = 1.0) -> int:
    """How many characters take about ``seconds`` to say at ``speed`` (1.0 normal)."""
    return int(seconds * CHARS_PER_SECOND * speed)


def speakable(
    content: str,
    attachment_names: list[str],
    limit: int,
    *,
    emoji: EmojiMode = "name",
    names: Mapping[str, str] | None = None,
    repeats: int = 2,
) -> str:
    """The words to say for a message (raw ``content``, mentions as Discord sends them);
    empty when there is nothing to say. ``names``: mention id → the name to say; a mention
    not in it is "someone", "a role" or "a channel". ``limit``: characters, at most. A letter
    repeated more than ``repeats`` times in a row is said ``repeats`` times."""
    known = names or {}
    text = _CODE_BLOCK.sub(" a code block ", content)
    text = _SPOILER.sub(" spoiler ", text)
    text = _URL.sub(lambda m: f"a link to {m.group(1).lower()}", text)
    text = _CUSTOM_EMOJI.sub(lambda m: m.group(1).replace("_", " "), text)
    text = _MENTION.sub(lambda m: known.get(m.group(2)) or _UNSAID[m.group(1)], text)
    text = emoji_names.replace_emoji(text, replace=_emoji_name if emoji == "name" else " ")
    text = _REPEATED_LETTER.sub(lambda m: m.group(0)[:repeats], text)
    text = _REPEATED_SYMBOL.sub(r"\1\1\1", text)
    text = " ".join(text.split())
    text = re.sub(r" ([,.!?;:])", r"\1", text)  # "spoiler ." from "||x||."
    if len(text) > limit:
        cut = text[:limit].rsplit(" ", 1)[0] if " " in text[:limit] else text[:limit]
        text = cut + ", and so on"
    extra = _attachments(attachment_names)
    return f"{text}, with {extra}" if text and extra else text or extra
