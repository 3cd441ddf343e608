"""Reading a text channel aloud: what a message sounds like when spoken.

Links become "a link to example.com" (nobody wants a URL spelled out), custom emoji their name,
attachments are named, whitespace collapses, and a message longer than the limit is cut at a
word boundary.
"""

from __future__ import annotations

import re

__all__ = ["speakable"]

_URL = re.compile(r"<?https?://(?:www\.)?([^/\s>:?#]+)[^\s>]*>?", re.IGNORECASE)
_CUSTOM_EMOJI = re.compile(r"<a?:(\w+):\d+>")


def _attachments(names: list[str]) -> str:
    if not names:
        return ""
    if len(names) == 1:
        return f"an attachment named {names[0]}"
    return f"{len(names)} attachments: " + ", ".join(names[:-1]) + f" and {names[-1]}"


def speakable(content: str, attachment_names: list[str], limit: int) -> str:
    """The words to say for a message; empty when there is nothing to say.

    ``content`` should already have mentions resolved to names (discord.py's ``clean_content``).
    """
    text = _URL.sub(lambda m: f"a link to {m.group(1).lower()}", content)
    text = _CUSTOM_EMOJI.sub(lambda m: m.group(1).replace("_", " "), text)
    text = " ".join(text.split())
    if len(text) > limit:
        cut = text[:limit].rsplit(" ", 1)[0] if " " in text[:limit] else text[:limit]
        text = cut + ", and so on"
    extra = _attachments(attachment_names)
    return f"{text}, with {extra}" if text and extra else text or extra
