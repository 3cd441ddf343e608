"""``oyez schedule add|list|remove|pause|resume``: schedules from the command line.

They are written to the same SQLite file a running ``oyez run`` reads (same data directory),
which picks a change up within seconds. Errors are :class:`~bot.errors.InvalidRequest` (exit
status 2) naming what is wrong: an invalid cron, an unknown zone, a time in the past, a bad
target, an unknown schedule.
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bot.errors import InvalidRequest
from bot.schedules import PLACEHOLDERS

# The parser is built for every `oyez` command (and --help): the model, the store and the
# pipeline are imported only when a schedule command runs.
if TYPE_CHECKING:
    from bot.ops.config import Settings
    from bot.schedules.store import ScheduleBook, StoredSchedule

__all__ = ["PRIORITIES", "add_schedule_parser", "schedule_command"]

#: ``--priority``: the values of :class:`bot.speech.Priority`, written out so that building the
#: parser imports no pydantic (tests/test_cli_startup.py checks they are the same).
PRIORITIES = ("low", "normal", "high")

_CHANNEL = re.compile(r"^(\d+)/(\d+)$")


def add_schedule_parser(commands: Any) -> None:
    """Add ``schedule`` and its actions to the ``oyez`` subcommands."""
    schedule = commands.add_parser("schedule", help="scheduled spoken alerts: add, list, remove…")
    actions = schedule.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser(
        "add",
        help="add a repeating (--cron) or one-shot (--at) alert",
        description="Placeholders in MESSAGE: "
        + ", ".join(f"{{{k}}} ({v})" for k, v in PLACEHOLDERS.items()),
    )
    add.add_argument("name", metavar="NAME", help="1-40 letters, digits, . _ -")
    when = add.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", metavar="EXPR", help='five fields, e.g. "0 19 * * 2"')
    when.add_argument(
        "--at", metavar="ISO-8601", help="one-shot, with a UTC offset: 2026-03-03T19:00:00+01:00"
    )
    add.add_argument("--tz", metavar="ZONE", help="IANA zone of --cron (default: time_zone)")
    add.add_argument(
        "--media-player", action="append", default=[], metavar="ENTITY", help="repeatable"
    )
    add.add_argument(
        "--satellite",
        action="append",
        default=[],
        metavar="ENTITY",
        help="a voice satellite (assist_satellite.*); repeatable",
    )
    add.add_argument(
        "--discord",
        action="append",
        default=[],
        metavar="GUILD_ID/CHANNEL_ID",
        help="a voice channel, or a name from announce.discord_channels (repeatable)",
    )
    add.add_argument("--voice")
    add.add_argument("--provider")
    add.add_argument("--priority", choices=PRIORITIES, default="normal")
    add.add_argument("--speed", type=float, help="speaking rate, 0.5 to 2 (1 normal)")
    add.add_argument("--volume", type=float, help="speakers' volume for the alert, 0 to 1")
    add.add_argument(
        "--chime",
        metavar="NAME|URL",
        help="played first on speakers: 'default' (announce.chime_url), a name of "
        "announce.chimes, or a URL on announce.chime_hosts",
    )
    add.add_argument(
        "--catch-up", action="store_true", help="speak a missed alert once, late, at start"
    )
    add.add_argument("--grace-s", type=float, default=60.0, help="lateness still on time")
    add.add_argument("message", metavar="MESSAGE")
    listing = actions.add_parser("list", help="every schedule with its next fire time")
    listing.add_argument("--json", action="store_true", help="one JSON object per schedule")
    for action, text in (("remove", "delete"), ("pause", "pause"), ("resume", "resume")):
        actions.add_parser(action, help=f"{text} a schedule").add_argument("name", metavar="NAME")


def _discord_target(text: str) -> dict[str, int] | str:
    match = _CHANNEL.match(text)
    if match:
        return {"guild_id": int(match[1]), "channel_id": int(match[2])}
    if "/" in text or text.isdigit():
        raise InvalidRequest(
            f"--discord {text!r}: expected GUILD_ID/CHANNEL_ID (two numbers) or a name from "
            "announce.discord_channels"
        )
    return text


def _line(stored: StoredSchedule, settings: Settings) -> str:
    data = stored.as_json(settings.zone())
    when = f"cron {data['cron']}" if data["cron"] else f"at {data['at']}"
    targets = [*data["media_player"], *data.get("satellite", [])] + [
        t if isinstance(t, str) else f"discord:{t['guild_id']}/{t['channel_id']}"
        for t in data["discord"]
    ]
    upcoming = data["next_fire"] or "-"
    last = f", last {data['last_fired']} {data['last_outcome']}" if data["last_fired"] else ""
    return (
        f"{data['name']:<16} {data['state']:<7} next {upcoming:<26} {when} ({data['zone']}) "
        f"→ {', '.join(targets) or 'announce.media_players'}: {data['message']!r}{last}"
    )


async def _add(args: argparse.Namespace, settings: Settings, book: ScheduleBook) -> None:
    from bot.schedules.model import Schedule, check_new, check_speakable
    from bot.synthesis.pipeline import SpeechPipeline

    data: dict[str, Any] = {
        "name": args.name,
        "message": args.message,
        "time_zone": args.tz,
        "media_player": args.media_player,
        "satellite": args.satellite,
        "discord": [_discord_target(t) for t in args.discord],
        "voice": args.voice,
        "provider": args.provider,
        "priority": args.priority,
        "speed": args.speed,
        "volume": args.volume,
        "chime": True if args.chime == "default" else (args.chime or False),
        "catch_up": args.catch_up,
        "grace_s": args.grace_s,
    }
    data.update({"cron": args.cron} if args.cron is not None else {"at": args.at})
    schedule = Schedule.parse(data)
    now = datetime.now(UTC)
    check_new(schedule, settings, now)
    pipeline = SpeechPipeline(settings)
    try:
        await check_speakable(schedule, settings, pipeline.prepare, now)
    finally:
        await pipeline.aclose()
    stored = await book.add(schedule, "cli", now)
    print(f"added {_line(stored, settings)}")


async def schedule_command(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``oyez schedule ACTION``; raises :class:`InvalidRequest` for bad input."""
    from bot.schedules.scheduler import configured_schedules
    from bot.schedules.store import ScheduleBook

    book = ScheduleBook(settings.data_dir)
    configured = {s.name.casefold() for s in configured_schedules(settings)}
    try:
        if args.action == "add":
            await _add(args, settings, book)
        elif args.action == "list":
            for stored in await book.all():
                if args.json:
                    print(json.dumps(stored.as_json(settings.zone())))
                else:
                    print(_line(stored, settings))
        elif args.action == "remove":
            removed = await book.remove(args.name)
            print(f"removed {removed.name}")
        else:
            stored = await book.set_enabled(args.name, args.action == "resume", datetime.now(UTC))
            print(f"{args.action}d {stored.name}")
        if args.action != "list" and args.name.casefold() in configured:
            print(
                f"note: {args.name} is in the configuration file's schedules:, which wins at "
                "the next start: change it there too"
            )
    finally:
        book.close()
    return 0
