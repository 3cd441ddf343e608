"""The bot's slash commands, one module per topic; their ``⚠️`` replies come from one place.

:mod:`.say` (``/say``), :mod:`.playback` (``/join``, ``/leave``, ``/skip``, ``/stop``,
``/queue``), :mod:`.voices` (``/voice set|speed|show``, ``/voices``), :mod:`.people`
(``/nick``, ``/dictionary``), :mod:`.server` (``/settings``, ``/setup``, ``/credits``) and
:mod:`.schedules` (``/schedule``). Groups are
:class:`discord.app_commands.Group` classes, plain commands made by a function given what they
need; Oyez's errors they raise are answered by :class:`.errors.OyezCommandTree`.
"""
