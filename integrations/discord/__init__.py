"""Discord: the bot that speaks in voice channels, and the sink of announcements for them.

:mod:`.bot` is the client (intents, command registration, events); :mod:`.commands` holds the
slash commands; :mod:`.voice` joins, moves and leaves voice channels over :mod:`.connection`'s
resuming voice client; :mod:`.player` queues each guild's speech, played through :mod:`.feed`
and :mod:`.audio`; :mod:`.reading`, :mod:`.announcements`, :mod:`.arrival` and
:mod:`.catalogue` read channels aloud, await announcements, order ``/say`` and list voices;
:mod:`.guilds` and :mod:`.preferences` keep settings; :mod:`.service` plugs it into ``oyez run``.
"""
