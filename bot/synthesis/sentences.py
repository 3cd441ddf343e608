"""Splitting normalised text into sentences, so a long text starts playing after its first one.

:func:`split_sentences` cuts after ``.``, ``!``, ``?`` or ``…`` (and closing quotes or brackets)
before whitespace and a word that can start a sentence: not after titles, ``e.g.`` or initials,
after ``etc.``/``p.m.`` only before a capital, not in numbers (``3.5``), before a lower-case word
(``Well… maybe``) or inside a sound tag (``[long pause.]``). Tags stay with a sentence (between
two, with the next one). Over ``max_chars`` (``first_max_chars`` for the first one, the time to
first audio) a sentence is cut at its last clause break (``;``, ``:``, ``,``, a dash).
:func:`split_pieces` bounds every piece, for engines whose memory grows with the text (Piper).
"""

from __future__ import annotations

import re

__all__ = ["split_pieces", "split_sentences"]

#: Abbreviations that never end a sentence (lower case, without the final dot).
_NEVER_FINAL = frozenset(
    {
        *("mr", "mrs", "ms", "mx", "dr", "prof", "sr", "jr", "st", "mt", "ft", "rev", "hon"),
        *("gen", "col", "lt", "sgt", "capt", "cmdr", "adm", "gov", "sen", "rep", "pres"),
        *("e.g", "i.e", "vs", "cf", "approx", "ca", "viz", "al"),
    }
)
#: Abbreviations that end a sentence only when the next word is capitalised.
_MAYBE_FINAL = frozenset(
    {
        *("etc", "a.m", "p.m", "inc", "ltd", "co", "corp", "bros", "dept", "est"),
        *("u.s", "u.k", "u.s.a", "e.u", "jan", "feb", "mar", "apr", "jun", "jul", "aug"),
        *("sep", "sept", "oct", "nov", "dec", "mon", "tue", "wed", "thu", "fri", "sat", "sun"),
    }
)
#: Abbreviations that do not end a sentence before a number (``No. 5``, ``Fig. 3``).
_BEFORE_NUMBER = frozenset({"no", "nos", "fig", "figs", "vol", "ch", "p", "pp", "sec", "art"})

# Sentence-final punctuation, closing quotes/brackets, then the whitespace a cut replaces.
_CANDIDATE = re.compile(r"(?:\.{2,}|…|[.!?])+[\"'”’»)\]]*(?=\s)")
_TAG = re.compile(r"<[^<>]{1,80}>|\[[^\[\]]{1,80}\]")
_WORD_BEFORE = re.compile(r"([\w.]+)$")
_WORD_AFTER = re.compile(r"\s+((?:(?:<[^<>]{1,80}>|\[[^\[\]]{1,80}\])\s*)*)([^\s])")
_CLAUSE_BREAK = re.compile(r"[;:,](?=\s)|\s[–—-](?=\s)")


def _tag_spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in _TAG.finditer(text)]


def _inside(position: int, spans: list[tuple[int, int]]) -> bool:
    return any(start < position < end for start, end in spans)


def _is_boundary(text: str, match: re.Match[str]) -> bool:
    """Whether the punctuation ``match`` ends a sentence."""
    after = _WORD_AFTER.match(text, match.end())
    if after is None:
        return False
    following = after.group(2)
    if following.islower():
        return False  # "approx. five", "Well… maybe": the sentence goes on
    punctuation = match.group(0).rstrip("\"'”’»)]")
    if punctuation != ".":
        return True  # "!", "?", "?!", and an ellipsis before a capital or a digit
    before = _WORD_BEFORE.search(text, 0, match.start())
    if before is None:
        return True
    word = before.group(1).casefold().rstrip(".")
    if word in _NEVER_FINAL:
        return False
    if len(word) == 1 and word.isalpha() and word != "i" and before.group(1)[0].isupper():
        return False  # an initial: "J. R. R. Tolkien" (but "… and so did I.")
    if word in _BEFORE_NUMBER and following.isdigit():
        return False
    if word in _MAYBE_FINAL:
        return following.isupper() or following.isdigit()
    return True


def _only_tags(piece: str) -> bool:
    return not _TAG.sub("", piece).strip()


def _cut_long(sentence: str, max_chars: int) -> list[str]:
    """``sentence`` cut at clause breaks so each piece has at most ``max_chars`` characters
    where a break allows it."""
    pieces: list[str] = []
    rest = sentence
    while len(rest) > max_chars:
        spans = _tag_spans(rest)
        breaks = [
            m.end()
            for m in _CLAUSE_BREAK.finditer(rest, 0, max_chars + 1)
            if not _inside(m.start(), spans) and m.end() >= max_chars // 4
        ]
        if not breaks:
            break
        cut = breaks[-1]
        pieces.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    pieces.append(rest)
    return [p for p in pieces if p]


def split_sentences(
    text: str, max_chars: int | None = None, *, first_max_chars: int | None = None
) -> list[str]:
    """The sentences of ``text`` (already normalised: single spaces), in order.

    Joining the result with single spaces gives ``text`` back (clause cuts of over-long
    sentences included). ``max_chars`` (characters, None: no limit) caps a sentence where a
    clause break allows it; ``first_max_chars`` caps the first one alone. Returns ``[text]``
    when there is nothing to cut, and ``[]`` for blank text.
    """
    text = text.strip()
    if not text:
        return []
    spans = _tag_spans(text)
    pieces: list[str] = []
    start = 0
    for match in _CANDIDATE.finditer(text):
        if _inside(match.start(), spans) or not _is_boundary(text, match):
            continue
        pieces.append(text[start : match.end()].strip())
        start = match.end()
    pieces.append(text[start:].strip())
    sentences: list[str] = []
    carried = ""  # tags waiting for the sentence they open
    for piece in pieces:
        if not piece:
            continue
        if _only_tags(piece):
            carried = f"{carried} {piece}".strip()
            continue
        sentences.append(f"{carried} {piece}".strip())
        carried = ""
    if carried:
        if sentences:
            sentences[-1] = f"{sentences[-1]} {carried}"
        else:
            sentences.append(carried)
    if max_chars is not None:
        sentences = [part for s in sentences for part in _cut_long(s, max_chars)]
    if first_max_chars is not None and len(sentences) > 1:  # a text of one stays whole
        head, *rest = _cut_long(sentences[0], first_max_chars)
        if rest:
            sentences[:1] = [head, " ".join(rest)]
    return sentences


def _cut_words(piece: str, max_chars: int) -> list[str]:
    """``piece`` cut at its last space before each ``max_chars`` limit (hard at the limit
    where a word is longer)."""
    cuts: list[str] = []
    rest = piece
    while len(rest) > max_chars:
        space = rest.rfind(" ", 0, max_chars + 1)
        cut = space if space > 0 else max_chars
        cuts.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    cuts.append(rest)
    return [c for c in cuts if c]


def split_pieces(text: str, max_chars: int) -> list[str]:
    """``text`` in pieces of at most ``max_chars`` characters, in order: its sentences, one
    longer than that cut at clause breaks (:func:`split_sentences`), and what is still longer
    (no break to cut at) at its last space before the limit, or at the limit inside a word
    longer than it. Joining with single spaces gives ``text`` back but for those hard cuts;
    ``[]`` for blank text. Raises ``ValueError`` when ``max_chars`` < 1.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, not {max_chars}")
    return [cut for s in split_sentences(text, max_chars) for cut in _cut_words(s, max_chars)]
