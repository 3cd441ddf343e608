"""The bot's slash commands, one module per topic; their ``⚠️`` replies come from one place.

:mod:`.say` (``/say``), :mod:`.playback` (``/join``, ``/leave``, ``/skip``, ``/stop``,
``/queue``), :mod:`.voices` (``/voice set|show``, ``/voices``), :mod:`.server` (``/settings``,
``/setup``, ``/credits``: Manage Server) and :mod:`.schedules` (``/schedule``: Manage Server).
Groups are :class:`discord.app_commands.Group` classes; plain commands are made by a function
given what they need. Our errors raised by a command become its ``⚠️`` reply in
:class:`.errors.OyezCommandTree`.
"""
