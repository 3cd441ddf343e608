"""Sentence splitting, and speaking a text sentence by sentence through the pipeline (a tone
provider that logs its calls; real ffmpeg)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.audio.ogg import opus_packets
from bot.errors import ProviderError
from bot.ops import config
from bot.providers.base import ProviderRegistry, SynthesisJob, Synthesized
from bot.speech import OutputProfile, SpeechRequest, Utterance
from bot.synthesis.pipeline import SpeechPipeline
from bot.synthesis.prepared import Segment, join_utterances
from bot.synthesis.sentences import split_pieces, split_sentences
from integrations import PROVIDERS
from tests.support.asr import Transcriber, decode, word_error_rate
from tests.support.probe import describe
from tests.support.tone_provider import ToneProvider

# -- splitting ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Dr. Smith is here. Mrs. Jones is not.", ["Dr. Smith is here.", "Mrs. Jones is not."]),
        ("Bring a tool, e.g. a hammer. Then stop.", ["Bring a tool, e.g. a hammer.", "Then stop."]),
        ("See i.e. or cf. here. Ask Prof. Li.", ["See i.e. or cf. here.", "Ask Prof. Li."]),
        ("He met J. R. R. Tolkien once.", ["He met J. R. R. Tolkien once."]),
        ("So did I. Then we left.", ["So did I.", "Then we left."]),
        ("We left at 5 p.m. The party went on.", ["We left at 5 p.m.", "The party went on."]),
        ("Apples, pears etc. and more.", ["Apples, pears etc. and more."]),
        ("See No. 5 and Fig. 3 for details.", ["See No. 5 and Fig. 3 for details."]),
        ("I said no. Yes, I did.", ["I said no.", "Yes, I did."]),
    ],
    ids=["titles", "e.g.", "i.e. cf. Prof.", "initials", "I", "p.m.", "etc.", "No. Fig.", "no"],
)  # fmt: skip
def test_abbreviations(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("It is 3.5 today. It was 2.25 before.", ["It is 3.5 today.", "It was 2.25 before."]),
        ("Pi is about 3.14159.", ["Pi is about 3.14159."]),
        ("It cost 1.000.000 euros. Wow.", ["It cost 1.000.000 euros.", "Wow."]),
        ("Meet at 10.30 tomorrow. Be on time.", ["Meet at 10.30 tomorrow.", "Be on time."]),
        ("It starts at 10.30. Be on time.", ["It starts at 10.30.", "Be on time."]),
    ],
    ids=["decimals", "decimal at the end", "thousands", "time", "time at the end"],
)
def test_decimals_and_times(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I am so tired. <sigh> I need a break.", ["I am so tired.", "<sigh> I need a break."]),
        ("That is funny [laugh]. Anyway, go on.", ["That is funny [laugh].", "Anyway, go on."]),
        ("Wow! [laugh] Let us go.", ["Wow!", "[laugh] Let us go."]),
        ("Goodbye now. [laugh]", ["Goodbye now. [laugh]"]),
        ("<sigh>", ["<sigh>"]),
        ("[long pause. then] Hello there. Bye.", ["[long pause. then] Hello there.", "Bye."]),
        ('Wait <break time="1.5s"/> now. Go.', ['Wait <break time="1.5s"/> now.', "Go."]),
    ],
    ids=["tag opens the next", "tag inside", "after !", "tag at the end", "only a tag",
         "dot inside a tag", "dot in an SSML tag"],
)  # fmt: skip
def test_sound_tags_stay_with_their_sentence(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Well... maybe not.", ["Well... maybe not."]),
        ("Wait… What happened?", ["Wait…", "What happened?"]),
        ("I see... Really?! Yes.", ["I see...", "Really?!", "Yes."]),
        ('She said "Stop." Then she left.', ['She said "Stop."', "Then she left."]),
        ("(It rained.) We stayed in.", ["(It rained.)", "We stayed in."]),
        ("no punctuation at all", ["no punctuation at all"]),
        ("   ", []),
    ],
    ids=["ellipsis, lower case", "ellipsis, capital", "?!", "quote", "bracket", "none", "blank"],
)
def test_ellipses_quotes_and_edges(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_joining_the_sentences_gives_the_text_back() -> None:
    text = (
        "Dr. Who arrived at 10.30 p.m. The TARDIS was 3.5 metres tall, e.g. quite small… "
        "Amazing! <sigh> What now? [laugh] Nothing."
    )
    assert " ".join(split_sentences(text)) == text


def test_a_very_long_sentence_is_cut_at_its_clauses() -> None:
    clause = "the train to the city leaves from platform four"
    text = ", ".join([clause] * 8) + "."
    pieces = split_sentences(text, max_chars=120)
    assert len(pieces) > 1
    assert all(len(p) <= 120 for p in pieces)
    assert all(p.startswith("the train") for p in pieces)  # cut after commas only
    assert " ".join(pieces) == text
    assert split_sentences(text) == [text]  # no limit, no cut


def test_a_long_first_sentence_is_cut_at_a_clause_for_a_quick_start() -> None:
    text = "Good evening, and welcome to the household news for this week. The bins go out."
    assert split_sentences(text, first_max_chars=50) == [
        "Good evening,",
        "and welcome to the household news for this week.",
        "The bins go out.",
    ]
    one = "Good evening, and welcome to the household news for this week."
    assert split_sentences(one, first_max_chars=50) == [one]  # a text of one stays whole


# -- speaking sentence by sentence ----------------------------------------------------------------


class CountingTone(ToneProvider):
    """The tone provider, slow enough to watch (``delay_s`` per call), failing on "broken"."""

    delay_s = 0.05
    running = 0
    most = 0

    async def synthesize(self, job: SynthesisJob) -> Synthesized:
        cls = type(self)
        cls.running += 1
        cls.most = max(cls.most, cls.running)
        try:
            await asyncio.sleep(self.delay_s)
            if "broken" in job.text:
                raise ProviderError(self.name, "the tone generator is broken")
            return await super().synthesize(job)
        finally:
            cls.running -= 1


@pytest.fixture
def tone() -> type[CountingTone]:
    ToneProvider.calls.clear()
    CountingTone.running = CountingTone.most = 0
    CountingTone.delay_s = 0.05
    return CountingTone


@pytest.fixture
async def speech(tmp_path: Path, tone: type[CountingTone]) -> AsyncIterator[SpeechPipeline]:  # noqa: ARG001 - requested to reset the voice
    settings = config.load(data_dir=tmp_path / "data", cache={"enabled": True})
    targets = {**PROVIDERS, "tone": "tests.synthesis.test_sentences:CountingTone"}
    pipeline = SpeechPipeline(settings, ProviderRegistry(settings, targets))
    yield pipeline
    await pipeline.aclose()


def ask(text: str, **fields: Any) -> SpeechRequest:
    return SpeechRequest(text=text, provider="tone", fallback=False, **fields)


async def segments_of(speech: SpeechPipeline, request: SpeechRequest, **kw: Any) -> list[Segment]:
    return [segment async for segment in speech.speak_sentences(request, **kw)]


async def test_each_sentence_is_spoken_on_its_own_in_order(
    speech: SpeechPipeline, tone: type[CountingTone]
) -> None:
    text = "Dr. Smith is in. The meeting is at 10.30 today. Bring 2.5 litres of water."
    found = await segments_of(speech, ask(text))
    sentences = split_sentences(text)
    assert tone.calls == sentences  # one call per sentence, in order
    assert [(s.index, s.count) for s in found] == [(i, 3) for i in range(3)]
    spoken = [s.speech for s in found]
    assert all(isinstance(u, Utterance) for u in spoken)
    utterances = [u for u in spoken if isinstance(u, Utterance)]  # all of them, as checked
    assert [u.text for u in utterances] == sentences
    assert tone.most == 1  # one synthesis at a time: the order is the synthesis order
    whole = join_utterances(ask(text), utterances)
    assert whole.text == text
    assert whole.duration_s == pytest.approx(sum(u.duration_s for u in utterances))
    assert len(opus_packets(whole.audio)) == sum(len(opus_packets(u.audio)) for u in utterances)


async def test_one_sentence_is_one_plain_request(
    speech: SpeechPipeline, tone: type[CountingTone]
) -> None:
    (only,) = await segments_of(speech, ask("Bin day tomorrow."))
    assert (only.index, only.count, only.lead_s) == (0, 1, 0.0)
    assert isinstance(only.speech, Utterance)
    assert tone.calls == ["Bin day tomorrow."]
    split_off = await segments_of(speech, ask("One. Two."), split=False)
    assert len(split_off) == 1
    assert tone.calls[-1] == "One. Two."


async def test_synthesis_runs_at_most_lookahead_sentences_ahead(
    speech: SpeechPipeline, tone: type[CountingTone]
) -> None:
    text = " ".join(f"Sentence number {n}." for n in range(1, 9))
    segments = speech.speak_sentences(ask(text), lookahead=2)
    first = await anext(segments)
    assert first.index == 0
    assert tone.calls == ["Sentence number 1."]  # the first goes alone
    await asyncio.sleep(1.0)  # plenty of time for everything, were it not bounded
    assert tone.calls == [f"Sentence number {n}." for n in (1, 2, 3)]
    second = await anext(segments)
    assert second.index == 1
    await asyncio.sleep(0.5)
    assert len(tone.calls) == 4  # one more taken: one more under way
    await segments.aclose()  # closing stops the rest
    await asyncio.sleep(0.3)
    assert len(tone.calls) == 4


async def test_the_next_sentence_is_asked_while_the_one_before_is_transcoded(
    speech: SpeechPipeline, tone: type[CountingTone], monkeypatch: pytest.MonkeyPatch
) -> None:
    transcode = speech.transcoder.transcode
    asked_by_then: list[list[str]] = []  # the provider's calls when each transcode ended

    async def slow_transcode(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.3)  # the tone itself takes 0.05 s a call
        encoded = await transcode(*args, **kwargs)
        asked_by_then.append(list(tone.calls))
        return encoded

    monkeypatch.setattr(speech.transcoder, "transcode", slow_transcode)
    text = "First things first. Then the second. And a third."
    found = await segments_of(speech, ask(text))
    sentences = split_sentences(text)
    assert [s.speech.text for s in found] == sentences
    assert asked_by_then[0] == sentences[:1]  # the first goes alone, transcoding too
    assert asked_by_then[1] == sentences  # the third was asked while the second transcoded
    assert tone.most == 1  # and never beside another provider call: sentence order is kept


async def test_a_hit_after_a_sentence_that_fell_back_is_said_by_the_voice_that_took_over(
    speech: SpeechPipeline, tone: type[CountingTone]
) -> None:
    third = "This stays with the voice that took over."
    await speech.speak(SpeechRequest(text=third, provider="tone"))  # cached in the tone's voice
    text = f"This works. This is broken. {third}"
    found = await segments_of(speech, SpeechRequest(text=text, provider="tone"))
    utterances = [s.speech for s in found if isinstance(s.speech, Utterance)]
    assert [u.voice.provider for u in utterances] == ["tone", "piper", "piper"]
    assert not utterances[2].cached  # the tone's copy would switch voices back midway
    assert tone.calls == [third, "This works."]


async def test_every_sentence_is_cached_on_its_own(
    speech: SpeechPipeline, tone: type[CountingTone]
) -> None:
    await segments_of(speech, ask("Good morning. The bins go out today."))
    found = await segments_of(speech, ask("Good morning. The post has come."))
    assert tone.calls == ["Good morning.", "The bins go out today.", "The post has come."]
    assert [s.speech.cached for s in found] == [True, False]  # type: ignore[union-attr]
    again = await segments_of(speech, ask("Good morning. The post has come."))
    assert all(s.speech.cached for s in again)  # type: ignore[union-attr]
    assert len(tone.calls) == 3
    assert join_utterances(ask("x"), [s.speech for s in again]).cached  # type: ignore[misc]


@pytest.mark.usefixtures("tone")
async def test_a_failing_sentence_fails_in_its_turn(speech: SpeechPipeline) -> None:
    segments = speech.speak_sentences(ask("This works. This is broken. This never runs."))
    first = await anext(segments)
    assert isinstance(first.speech, Utterance)
    with pytest.raises(ProviderError, match="broken"):
        await anext(segments)
    await segments.aclose()


async def test_a_text_that_fell_back_stays_with_the_voice_that_took_over(
    speech: SpeechPipeline, tone: type[CountingTone]
) -> None:
    text = "This works. This is broken. This stays with the voice that took over."
    asked = SpeechRequest(text=text, provider="tone")  # the fallback chain: piper
    found = await segments_of(speech, asked)
    utterances = [s.speech for s in found if isinstance(s.speech, Utterance)]
    assert [u.voice.provider for u in utterances] == ["tone", "piper", "piper"]
    # the tone speaks only the first: the second failed (uncounted), the third never reached it
    assert tone.calls == split_sentences(text)[:1]
    (note,) = join_utterances(asked, utterances).fallbacks  # the reply says so once
    assert note.provider == "tone" and "broken" in note.reason


@pytest.mark.parametrize("output", [OutputProfile.MP3, OutputProfile.WAV])
async def test_a_voice_at_another_rate_that_took_over_is_heard_at_the_texts_rate(
    speech: SpeechPipeline,
    tone: type[CountingTone],
    transcriber: Transcriber,
    output: OutputProfile,
) -> None:
    """An MP3 stream and a Wyoming ``audio-start`` have one rate: the tone speaks at 16 kHz,
    Piper, which takes over, at 22.05 kHz, so its sentences are resampled to 16 kHz."""
    text = "This works. This is broken. The front door has been left open."
    found = await segments_of(speech, SpeechRequest(text=text, provider="tone", output=output))
    utterances = [s.speech for s in found if isinstance(s.speech, Utterance)]
    assert [u.voice.provider for u in utterances] == ["tone", "piper", "piper"]
    assert tone.calls == ["This works."]
    for utterance in utterances:
        assert utterance.sample_rate == 16_000
        assert "16000 Hz, mono" in describe(utterance.audio)
        heard = len(decode(utterance.audio, 16_000)) / 16_000
        assert heard == pytest.approx(utterance.duration_s, abs=0.16)  # + an MP3's padding
    said = transcriber.transcribe(utterances[2].audio)
    assert word_error_rate("The front door has been left open.", said) <= 0.2
    alone = await speech.speak(SpeechRequest(text=text.split(". ")[2], output=output))
    assert alone.cached and alone.sample_rate == 22_050  # cached at its own rate


async def test_a_short_first_sentence_is_held_until_the_next_is_likely_made(
    speech: SpeechPipeline, tone: type[CountingTone]
) -> None:
    # the tone lasts 0.05 s per character; each call takes 0.6 s
    tone.delay_s = 0.6
    segments = speech.speak_sentences(ask("Hi. A much longer second sentence follows."))
    first = await anext(segments)
    assert isinstance(first.speech, Utterance)
    assert first.speech.duration_s < 0.2
    assert first.lead_s > 0.6  # "Hi." ends long before the next one can be made
    assert first.next_made is not None
    assert not first.next_made.is_set()
    async with asyncio.timeout(2):
        await first.next_made.wait()  # and the player learns when it is
    await segments.aclose()
    tone.delay_s = 0.0
    long_first = speech.speak_sentences(ask("A much longer first sentence comes here. Hi."))
    quick = await anext(long_first)
    await long_first.aclose()
    assert quick.lead_s == 0.0  # 2 s of audio: "Hi." is made long before its end


@pytest.mark.usefixtures("tone")
async def test_later_sentences_do_not_expire(speech: SpeechPipeline) -> None:
    request = SpeechRequest(
        text="First one. Second one. Third one.",
        provider="tone",
        fallback=False,
        expires_at=datetime.now(UTC) + timedelta(seconds=0.5),
    )
    segments = speech.speak_sentences(request, lookahead=0)
    await anext(segments)
    await asyncio.sleep(0.6)  # the request expires while its first sentence plays
    rest = [s async for s in segments]
    assert [s.index for s in rest] == [1, 2]


# -- pieces of a bounded length ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Short. Also short.", ["Short.", "Also short."]),
        ("one two, three four, five six", ["one two,", "three four,", "five six"]),
        ("one two three four five six", ["one two", "three four", "five six"]),  # no break
        ("abcdefghijklmnop qr", ["abcdefghij", "klmnop qr"]),  # a word longer than the limit
    ],
    ids=["sentences", "clauses", "words", "hard cut"],
)
def test_pieces_are_cut_at_clauses_else_between_words(text: str, expected: list[str]) -> None:
    assert split_pieces(text, 10 if text.startswith("abc") else 12) == expected


def test_pieces_of_a_long_text_without_any_break_are_bounded_and_keep_every_word() -> None:
    text = " ".join(["the quick brown fox jumps over the lazy dog"] * 25)  # 1,099 characters
    pieces = split_pieces(text, 200)
    assert len(pieces) == 6
    assert all(len(p) <= 200 for p in pieces)
    assert " ".join(pieces) == text
    assert split_pieces("", 200) == []
    with pytest.raises(ValueError, match="at least 1"):
        split_pieces(text, 0)
