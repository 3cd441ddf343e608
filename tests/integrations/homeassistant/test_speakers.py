"""Speakers without Home Assistant: the per-speaker line (priority, then arrival; one failure
blocks nothing), what a snapshot keeps, the ``play_media`` data (``extra.volume`` for Sonos)
and ``homeassistant.speakers`` in the configuration. The same behaviour against a real Home
Assistant is in ``test_speakers_ha.py``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from bot.announce.model import Announcement, TargetResult
from bot.errors import ConfigError, NoProviderSpoke
from bot.ops import config
from bot.ops.metrics import REGISTRY
from bot.speech import OutputProfile, Priority, SpeechRequest, Timings, Utterance, Voice
from bot.synthesis.prepared import PreparedRequest, Segment
from bot.web.server import MediaStore
from integrations.homeassistant import visit as visit_module
from integrations.homeassistant.settings import (
    HomeAssistantSettings,
    SpeakerMode,
    SpeakerSettings,
)
from integrations.homeassistant.sink import MediaPlayerSink
from integrations.homeassistant.speakers import SpeakerQueues
from integrations.homeassistant.visit import (
    MEDIA_ANNOUNCE,
    Playback,
    Snapshot,
    SpeakerVisit,
    StateReader,
    play_media_data,
)
from integrations.homeassistant.websocket import HomeAssistantClient

# -- the line ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    name: str
    priority: Priority = Priority.NORMAL
    fail: str | None = None  # "play" raises, "refused" a failed result, "finish" raises


@dataclass
class Speakers:
    """Visits that record what happens, in order; a visit's ``finished`` waits for
    :attr:`release` (set: announcements end at once)."""

    log: list[str] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    visits: int = 0
    restore_delay_s: float = 0.0

    async def visit(self, entity_id: str) -> Visit:
        self.visits += 1
        self.log.append(f"{entity_id} visit {self.visits}")
        return Visit(self, entity_id)


@dataclass
class Visit:
    speakers: Speakers
    entity_id: str

    async def play(self, item: Item) -> TargetResult:
        if item.fail == "play":
            raise RuntimeError("a bug")
        self.speakers.log.append(f"{self.entity_id} play {item.name}")
        if item.fail == "refused":
            return TargetResult(self.entity_id, False, "refused")
        return TargetResult(self.entity_id, True)

    async def finished(self, item: Item) -> None:
        await self.speakers.release.wait()
        if item.fail == "finish":
            raise RuntimeError("lost track")
        self.speakers.log.append(f"{self.entity_id} end {item.name}")

    async def restore(self, *, wait: bool = True) -> None:
        if wait:
            await asyncio.sleep(self.speakers.restore_delay_s)
        self.speakers.log.append(f"{self.entity_id} restore{'' if wait else ' now'}")


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_one_speaker_plays_by_priority_then_arrival_each_after_the_last() -> None:
    speakers = Speakers()
    queues: SpeakerQueues[Item] = SpeakerQueues(speakers.visit)
    first = asyncio.create_task(queues.play("media_player.a", Item("first")))
    await settle()
    later = [
        Item("low", Priority.LOW),
        Item("normal-1"),
        Item("high", Priority.HIGH),
        Item("normal-2"),
    ]
    tasks = [asyncio.create_task(queues.play("media_player.a", item)) for item in later]
    await settle()
    assert queues.waiting("media_player.a") == 4
    assert speakers.log == ["media_player.a visit 1", "media_player.a play first"]
    assert (await first).ok
    speakers.release.set()
    assert all(r.ok for r in await asyncio.gather(*tasks))
    await settle()
    names = ["first", "high", "normal-1", "normal-2", "low"]
    expected = ["media_player.a visit 1"]
    for name in names:
        expected += [f"media_player.a play {name}", f"media_player.a end {name}"]
    assert speakers.log == [*expected, "media_player.a restore"]


async def test_different_speakers_play_at_once() -> None:
    speakers = Speakers()
    queues: SpeakerQueues[Item] = SpeakerQueues(speakers.visit)
    results = await asyncio.gather(
        queues.play("media_player.a", Item("x")), queues.play("media_player.b", Item("x"))
    )
    # both started while neither has finished
    assert [r.target for r in results] == ["media_player.a", "media_player.b"]
    assert "media_player.b play x" in speakers.log
    assert not any(" end " in line for line in speakers.log)
    speakers.release.set()
    await settle()
    assert speakers.log.count("media_player.a restore") == 1
    assert speakers.log.count("media_player.b restore") == 1


async def test_a_failure_fails_that_announcement_only() -> None:
    speakers = Speakers()
    speakers.release.set()
    queues: SpeakerQueues[Item] = SpeakerQueues(speakers.visit)
    entity = "media_player.a"
    items = [Item("bug", fail="play"), Item("no", fail="refused"), Item("lost", fail="finish")]
    results = await asyncio.gather(*(queues.play(entity, i) for i in [*items, Item("ok")]))
    assert [r.ok for r in results] == [False, False, True, True]
    assert results[0].error == "internal error: a bug"
    assert results[1].error == "refused"
    await settle()
    # a refused announcement is not waited for; one whose end was lost does not hold the line
    assert speakers.log == [
        f"{entity} visit 1",
        f"{entity} play no",
        f"{entity} play lost",
        f"{entity} play ok",
        f"{entity} end ok",
        f"{entity} restore",
    ]


async def test_a_new_run_after_the_speaker_was_put_back_is_a_new_visit() -> None:
    speakers = Speakers()
    speakers.release.set()
    queues: SpeakerQueues[Item] = SpeakerQueues(speakers.visit)
    await queues.play("media_player.a", Item("one"))
    await settle()
    await queues.play("media_player.a", Item("two"))
    await settle()
    assert speakers.visits == 2
    assert speakers.log.count("media_player.a restore") == 2


async def test_a_caller_that_gives_up_leaves_the_line_and_stopping_fails_the_rest() -> None:
    speakers = Speakers()
    queues: SpeakerQueues[Item] = SpeakerQueues(speakers.visit)
    await queues.play("media_player.a", Item("first"))
    gone = asyncio.create_task(queues.play("media_player.a", Item("gone")))
    left = asyncio.create_task(queues.play("media_player.a", Item("left")))
    await settle()
    gone.cancel()
    await settle()
    await queues.aclose()
    assert (await left) == TargetResult("media_player.a", False, "Oyez stopped")
    assert "media_player.a play gone" not in speakers.log
    assert speakers.log[-1] == "media_player.a restore now"  # put back, at once, when stopped


async def test_stopping_during_the_restore_delay_puts_the_speaker_back_at_once() -> None:
    speakers = Speakers(restore_delay_s=60)
    speakers.release.set()
    queues: SpeakerQueues[Item] = SpeakerQueues(speakers.visit)
    await queues.play("media_player.a", Item("one"))
    await settle()
    assert speakers.log[-1] == "media_player.a end one"  # now in the restore's delay
    async with asyncio.timeout(5):
        await queues.aclose()
    assert speakers.log[-1] == "media_player.a restore now"


# -- snapshot and play_media ----------------------------------------------------------------------


def playback(volume: float | None) -> Playback:
    request = SpeechRequest(id="r1", text="Hello.")
    return Playback("http://oyez.lan/media/x.mp3", "Hello.", volume, 1.5, request)


def test_the_announcement_volume_also_goes_in_extra_as_sonos_takes_it() -> None:
    data = play_media_data(playback(0.35), announce=True)
    assert data == {
        "media_content_id": "http://oyez.lan/media/x.mp3",
        "media_content_type": "music",
        "announce": True,
        "extra": {"title": "Hello.", "volume": 35},
    }
    plain = play_media_data(playback(None), announce=False)
    assert "announce" not in plain
    assert plain["extra"] == {"title": "Hello."}


def test_snapshot_keeps_what_was_playing_and_where() -> None:
    now = datetime(2025, 5, 1, 12, 0, 10, tzinfo=UTC)
    state = {
        "entity_id": "media_player.living_room",
        "state": "playing",
        "attributes": {
            "media_content_id": "eyU3bRy2x44",
            "media_content_type": "movie",
            "media_position": 45,
            "media_position_updated_at": (now - timedelta(seconds=10)).isoformat(),
            "volume_level": 0.6,
            "supported_features": 2 | 4 | 512,
        },
    }
    snapshot = Snapshot.of(state, now)
    assert snapshot == Snapshot("playing", "eyU3bRy2x44", "movie", 55.0, 0.6, 518)
    assert snapshot.resumable
    idle = Snapshot.of({"state": "idle", "attributes": {"volume_level": True}})
    assert not idle.resumable
    assert idle.volume is None  # a bool is not a level
    assert idle.position_s is None


@pytest.mark.parametrize(
    ("features", "mode", "announces"),
    [
        (MEDIA_ANNOUNCE | 512, SpeakerMode.AUTO, True),
        (512, SpeakerMode.AUTO, False),
        (512, SpeakerMode.ANNOUNCE, True),
        (MEDIA_ANNOUNCE | 512, SpeakerMode.RESUME, False),
    ],
)
def test_announce_support_decides_unless_the_owner_says(
    features: int, mode: SpeakerMode, announces: bool
) -> None:
    snapshot = Snapshot.of({"state": "playing", "attributes": {"supported_features": features}})
    assert snapshot.announces(SpeakerSettings(mode=mode)) is announces


# -- homeassistant.speakers -----------------------------------------------------------------------


def test_speakers_are_configured_by_entity_id(tmp_path: Path) -> None:
    settings = config.load(
        data_dir=tmp_path,
        homeassistant={
            "speakers": {
                "media_player.kitchen_nest": {"mode": "resume", "restore_delay_s": 2},
                "Office": {"mode": "announce", "set_volume": False},
            }
        },
    )
    ha = HomeAssistantSettings.from_settings(settings)
    assert ha.speaker("media_player.kitchen_nest") == SpeakerSettings(
        mode=SpeakerMode.RESUME, restore_delay_s=2
    )
    assert ha.speaker("media_player.office").set_volume is False
    assert ha.speaker("media_player.other") == SpeakerSettings()


@pytest.mark.parametrize(
    ("speakers", "problems"),
    [
        ({"Kitchen Nest": {}}, ["'Kitchen Nest' is not a media player entity id"]),
        ({"kitchen": {}, "media_player.kitchen": {}}, ["media_player.kitchen is given twice"]),
        (
            {"kitchen": {"mode": "loud", "restore_delay_s": -1, "colour": "red"}},
            [
                "speakers.media_player.kitchen.mode: Input should be 'auto', 'announce' or "
                "'resume'",
                "speakers.media_player.kitchen.restore_delay_s: Input should be greater than",
                "speakers.media_player.kitchen.colour: unknown key",
            ],
        ),
        ({"kitchen": "resume"}, ["speakers.media_player.kitchen: "]),
    ],
)
def test_bad_speaker_settings_name_the_key(
    tmp_path: Path, speakers: dict[str, object], problems: list[str]
) -> None:
    settings = config.load(data_dir=tmp_path, homeassistant={"speakers": speakers})
    with pytest.raises(ConfigError) as raised:
        HomeAssistantSettings.from_settings(settings)
    message = str(raised.value)
    assert "invalid configuration in homeassistant" in message
    for problem in problems:
        assert problem in message


def test_a_speaker_is_configured_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # environment variables cannot hold the entity id's dot: the object id stands for it
    monkeypatch.setenv("OYEZ_HOMEASSISTANT__SPEAKERS__KITCHEN_NEST__MODE", "resume")
    monkeypatch.setenv("OYEZ_HOMEASSISTANT__SPEAKERS__KITCHEN_NEST__RESTORE_DELAY_S", "1.5")
    ha = HomeAssistantSettings.from_settings(config.load(data_dir=tmp_path))
    assert ha.speakers == {
        "media_player.kitchen_nest": SpeakerSettings(mode=SpeakerMode.RESUME, restore_delay_s=1.5)
    }


# -- a visit, against a scripted Home Assistant ---------------------------------------------------

KITCHEN = "media_player.kitchen"


@dataclass
class ScriptedHomeAssistant:
    """``get_states`` answers :attr:`state` (a callable may change it per call);
    ``call_service`` is recorded. The real Home Assistant is in ``test_speakers_ha.py``."""

    state: dict[str, Any]
    calls: list[tuple[str, dict[str, Any] | None]] = field(default_factory=list)
    reads: int = 0

    async def get_states(self) -> list[dict[str, Any]]:
        self.reads += 1
        await asyncio.sleep(0)
        return [{"entity_id": KITCHEN, **self.state}]

    async def wait_started(self, _timeout_s: float) -> bool:
        return False  # it is running: a missing speaker is missing

    async def call_service(
        self,
        domain: str,
        service: str,
        service_data: dict[str, Any] | None = None,
        *,
        target: dict[str, Any] | None = None,
    ) -> None:
        assert (domain, target) == ("media_player", {"entity_id": KITCHEN})
        self.calls.append((service, service_data))
        if service == "play_media" and service_data is not None:
            self.state["attributes"]["media_content_id"] = service_data["media_content_id"]


def kitchen(state: str, features: int, **attributes: Any) -> ScriptedHomeAssistant:
    base = {"supported_features": features, "volume_level": 0.5, **attributes}
    return ScriptedHomeAssistant({"state": state, "attributes": base})


def visit_of(ha: ScriptedHomeAssistant, **speaker: Any) -> SpeakerVisit:
    states = StateReader(cast(HomeAssistantClient, ha))
    return SpeakerVisit(states, KITCHEN, SpeakerSettings(**speaker), margin_s=0.0)


def services(ha: ScriptedHomeAssistant) -> list[str]:
    return [service for service, _ in ha.calls]


async def test_an_announcing_speaker_gets_announce_and_only_its_volume_back() -> None:
    ha = kitchen(
        "playing", MEDIA_ANNOUNCE | 512 | 2, media_content_id="radio", media_content_type="music"
    )
    visit = visit_of(ha)
    result = await visit.play(playback(0.3))
    assert result.ok
    await visit.restore()
    assert ha.calls == [
        ("volume_set", {"volume_level": 0.3}),
        ("play_media", play_media_data(playback(0.3), announce=True)),
        ("volume_set", {"volume_level": 0.5}),
    ]


async def test_set_volume_false_leaves_the_volume_to_extra() -> None:
    ha = kitchen("idle", MEDIA_ANNOUNCE | 512)
    visit = visit_of(ha, set_volume=False)
    await visit.play(playback(0.3))
    await visit.restore()
    assert services(ha) == ["play_media"]
    assert ha.calls[0][1] is not None and ha.calls[0][1]["extra"]["volume"] == 30


async def test_in_a_run_each_announcement_has_its_own_volume_and_the_last_is_put_back() -> None:
    ha = kitchen("playing", MEDIA_ANNOUNCE | 512)
    visit = visit_of(ha)
    for volume in (0.3, None, 0.3):
        assert (await visit.play(playback(volume))).ok
    await visit.restore()
    levels = [d["volume_level"] for s, d in ha.calls if s == "volume_set" and d]
    assert levels == [0.3, 0.5, 0.3, 0.5]


async def test_an_idle_speaker_that_still_plays_the_announcement_is_stopped() -> None:
    ha = kitchen("idle", 512 | 4096)
    visit = visit_of(ha)
    await visit.play(playback(None))
    ha.state["state"] = "playing"  # it says so, long after the announcement's end
    await visit.restore()
    assert services(ha) == ["play_media", "media_stop"]


async def test_a_speaker_that_reports_the_announcement_is_waited_for_until_it_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(visit_module, "POLL_S", 0.05)
    ha = kitchen("idle", 512)
    visit = visit_of(ha)
    item = playback(None)  # 1.5 s long
    await visit.play(item)
    ha.state["state"] = "playing"
    ha.state["attributes"]["media_duration"] = 1.5  # the announcement's own: it is reliable
    loop = asyncio.get_running_loop()
    started = loop.time()
    loop.call_later(2.5, ha.state.__setitem__, "state", "idle")
    await visit.finished(item)
    assert 2.5 <= loop.time() - started < 3.0
    # a player that keeps an old media_duration (the demo players) is judged by the length
    ha.state.update(state="playing")
    ha.state["attributes"]["media_duration"] = 300
    await visit.play(item)
    started = loop.time()
    await visit.finished(item)
    assert 1.5 <= loop.time() - started < 1.9


async def test_an_announcement_to_several_speakers_reads_the_states_once() -> None:
    ha = kitchen("idle", 512)
    states = StateReader(cast(HomeAssistantClient, ha))
    found = await asyncio.gather(*(states.state(KITCHEN) for _ in range(5)))
    assert ha.reads == 1
    assert all(f is not None and f["entity_id"] == KITCHEN for f in found)
    await states.state(KITCHEN)
    assert ha.reads == 2  # a later question is a new read


@dataclass
class SlowStates(ScriptedHomeAssistant):
    """``get_states`` answers only once :attr:`gate` is set."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)

    async def get_states(self) -> list[dict[str, Any]]:
        await self.gate.wait()
        return await super().get_states()


async def test_an_announcing_speaker_without_a_volume_gets_the_url_while_its_state_is_read() -> (
    None
):
    ha = SlowStates({"state": "idle", "attributes": {"supported_features": 512}})
    visit = SpeakerVisit(
        StateReader(cast(HomeAssistantClient, ha)),
        KITCHEN,
        SpeakerSettings(mode=SpeakerMode.ANNOUNCE),
        margin_s=0.0,
    )
    playing = asyncio.create_task(visit.play(playback(None)))
    for _ in range(10):
        await asyncio.sleep(0)
    assert services(ha) == ["play_media"]  # before get_states has answered
    assert ha.calls[0][1] is not None and ha.calls[0][1]["announce"] is True
    assert not playing.done()  # the result waits for the state: is there such a speaker?
    ha.gate.set()
    assert (await playing).ok
    # a speaker Home Assistant does not have still fails, though it was asked
    ha.state = {"entity_id": "media_player.other", "state": "idle", "attributes": {}}
    missing = SpeakerVisit(
        StateReader(cast(HomeAssistantClient, ha)),
        KITCHEN,
        SpeakerSettings(mode=SpeakerMode.ANNOUNCE),
        margin_s=0.0,
    )
    result = await missing.play(playback(None))
    assert (result.ok, result.error) == (False, "Home Assistant has no such entity")


async def test_a_speaker_seen_to_announce_gets_the_url_at_once_next_time_not_with_a_volume() -> (
    None
):
    ha = kitchen("idle", MEDIA_ANNOUNCE | 512)
    states = StateReader(cast(HomeAssistantClient, ha))
    first = SpeakerVisit(states, KITCHEN, SpeakerSettings(), margin_s=0.0)
    assert not first._blind(playback(None))  # its features are not known yet
    assert (await first.play(playback(None))).ok
    later = SpeakerVisit(states, KITCHEN, SpeakerSettings(), margin_s=0.0)
    assert later._blind(playback(None))
    assert not later._blind(playback(0.3))  # its volume is to be set, then put back
    assert not SpeakerVisit(states, KITCHEN, SpeakerSettings(mode=SpeakerMode.RESUME))._blind(
        playback(None)
    )


# -- the growing MP3 when synthesis fails ---------------------------------------------------------


@dataclass
class FailingPipeline:
    """``speak_sentences`` gives ``made`` sentences (a few bytes of "MP3" each), then raises."""

    made: int

    async def speak_sentences(self, request: SpeechRequest) -> AsyncIterator[Segment]:
        for i in range(self.made):
            await asyncio.sleep(0)
            audio = b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes([0xFF, 0xFB, i]) * 4
            voice = Voice("piper", "m", "v", "V")
            timings = Timings(0.1, 0.0, 0.1, 0.1)
            speech = Utterance(
                request.id, "Hi.", audio, OutputProfile.MP3, 44_100, 2, 1.0, voice, timings
            )
            yield Segment(i, 3, speech)
        raise NoProviderSpoke([("piper", "the model is broken")])


@pytest.mark.parametrize("made", [0, 1])
async def test_a_failed_synthesis_fails_every_speaker_which_gets_only_what_was_made(
    tmp_path: Path, made: int
) -> None:
    ha = kitchen("idle", MEDIA_ANNOUNCE)
    ha.state["entity_id"] = KITCHEN
    settings = config.load(data_dir=tmp_path)
    store = MediaStore(tmp_path / "media", "http://oyez.lan")
    sink = MediaPlayerSink(
        cast(HomeAssistantClient, ha), cast(Any, FailingPipeline(made)), store, settings.announce
    )
    request = SpeechRequest(id="f1", text="Hi. Hello. Bye.", output=OutputProfile.MP3)
    announcement = Announcement.parse({"message": "Hi. Hello. Bye.", "media_player": KITCHEN})
    results, utterance = await sink.deliver([KITCHEN], request, announcement)
    assert utterance is None
    error = "no provider could speak (piper: the model is broken)"
    assert [(r.ok, r.error) for r in results] == [(False, error)]
    urls = [d["media_content_id"] for s, d in ha.calls if s == "play_media" and d]
    if not made:  # nothing made: the speaker is not even told (it keeps what it plays)
        assert urls == []
        await sink.aclose()
        return
    (url,) = urls
    audio = store.audio(url.rsplit("/", 1)[-1])
    assert audio is not None
    # what was made before the failure is all the speaker gets
    assert audio[:3] == b"ID3" and audio.count(b"ID3") == 1
    await sink.aclose()


@dataclass
class AskedPipeline(FailingPipeline):
    """Makes one sentence, and keeps what it was asked to say."""

    asked: list[object] = field(default_factory=list)

    async def speak_sentences(self, request: Any) -> AsyncIterator[Segment]:
        self.asked.append(request)
        async for segment in super().speak_sentences(request.request):
            yield segment
            return


async def test_a_request_the_announcer_prepared_is_spoken_without_preparing_it_again(
    tmp_path: Path,
) -> None:
    ha = kitchen("idle", MEDIA_ANNOUNCE)
    ha.state["entity_id"] = KITCHEN
    settings = config.load(data_dir=tmp_path)
    pipeline = AskedPipeline(1)
    store = MediaStore(tmp_path / "media", "http://oyez.lan")
    sink = MediaPlayerSink(
        cast(HomeAssistantClient, ha), cast(Any, pipeline), store, settings.announce
    )
    request = SpeechRequest(id="p1", text="Hi.", output=OutputProfile.MP3)
    prepared = PreparedRequest(request, "Hi.", cast(Any, None), Voice("piper", "m", "v", "V"), {})
    announcement = Announcement.parse({"message": "Hi.", "media_player": KITCHEN})
    results, _ = await sink.deliver([KITCHEN], request, announcement, prepared)
    assert [r.ok for r in results] == [True]
    assert pipeline.asked == [prepared]  # as prepared, not the plain request again
    await sink.aclose()


async def test_a_speaker_gets_an_announcement_being_made_once_its_first_audio_is_there() -> None:
    ha = kitchen("idle", MEDIA_ANNOUNCE | 512)
    visit = visit_of(ha)
    first_made = asyncio.Event()
    item = Playback(
        "http://oyez.lan/media/g.mp3",
        "Hello.",
        None,
        0.0,
        SpeechRequest(id="g1", text="Hello."),
        first_made=first_made,
    )

    def waited_s() -> float:
        labels = {"sink": "media_player"}
        return REGISTRY.get_sample_value("oyez_time_to_first_audio_seconds_sum", labels) or 0.0

    before = waited_s()
    playing = asyncio.create_task(visit.play(item))
    for _ in range(10):
        await asyncio.sleep(0)
    # the URL only once there is audio to fetch: a speaker is never stopped for nothing
    assert services(ha) == []
    assert not playing.done()
    await asyncio.sleep(0.05)
    first_made.set()
    assert (await playing).ok
    assert services(ha) == ["play_media"]
    assert waited_s() - before >= 0.05  # the time to first audio counts until there is audio
