"""Outside systems, one sub-package each: the TTS providers (Piper, Segmind, Together, OpenAI),
Discord and Home Assistant.

Two registries name what Oyez loads from here, each entry ``"module:attribute"``, its module
imported only when first used:

- ``PROVIDERS``: provider name → its :class:`~bot.providers.base.Provider` class. Adding a
  provider is a module here plus one line; third-party packages register theirs under the
  ``oyez.providers`` entry-point group instead.
- ``FRONT_ENDS``: the front ends of ``oyez run``, name → a factory that takes the shared
  :class:`~bot.frontend.Parts` and returns the front end, or None when it is not configured.
  They are built and started in this order: the scheduler last, as its alerts go through the
  sinks the others add.
"""

__all__ = ["FRONT_ENDS", "PROVIDERS"]

PROVIDERS: dict[str, str] = {
    "piper": "integrations.piper:PiperProvider",
    "segmind": "integrations.segmind:SegmindProvider",
    "together": "integrations.together:TogetherProvider",
    "openai": "integrations.openai:OpenAIProvider",
}

FRONT_ENDS: dict[str, str] = {
    "discord": "integrations.discord.service:discord_front_end",
    "homeassistant": "integrations.homeassistant.service:homeassistant_front_end",
    "scheduler": "bot.schedules.service:scheduler_front_end",
}
