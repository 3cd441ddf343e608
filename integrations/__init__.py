"""Outside systems, one sub-package each: the TTS providers (Piper, Segmind, Together, OpenAI,
Google Cloud, Amazon Polly), Discord, Home Assistant and the Wyoming server; ``bot/`` reaches
them only through the two registries below.

Each entry is ``"module:attribute"``, its module imported only when first used. Adding a
provider or a front end is a module plus one line here (third-party providers register under
the ``oyez.providers`` entry-point group instead).
"""

__all__ = ["FRONT_ENDS", "FRONT_END_ROLES", "PRELOADS", "PROVIDERS"]

#: Provider name → its :class:`~bot.providers.base.Provider` class.
PROVIDERS: dict[str, str] = {
    "piper": "integrations.piper:PiperProvider",
    "segmind": "integrations.segmind:SegmindProvider",
    "together": "integrations.together:TogetherProvider",
    "openai": "integrations.openai:OpenAIProvider",
    "google": "integrations.google:GoogleProvider",
    "polly": "integrations.polly:PollyProvider",
}

#: Provider name → a function that starts loading the model a one-shot ``oyez say`` will need,
#: in a background thread, before the configuration is validated:
#: ``(raw providers.<name> section, voice or None, model or None) -> Thread | None`` (None: it
#: cannot tell). Its module imports the standard library only (:mod:`bot.providers.preload`).
PRELOADS: dict[str, str] = {"piper": "integrations.piper.models:preload"}

#: The front ends of ``oyez run``: name → a factory taking the shared :class:`bot.frontend.Parts`
#: and returning the front end, or None when it is not configured. Built and started in this
#: order: the scheduler last, as its alerts go through the sinks the others add.
FRONT_ENDS: dict[str, str] = {
    "discord": "integrations.discord.service:discord_front_end",
    "homeassistant": "integrations.homeassistant.service:homeassistant_front_end",
    "wyoming": "integrations.wyoming.service:wyoming_front_end",
    "scheduler": "bot.schedules.service:scheduler_front_end",
}

#: The roles of ``oyez run --role`` (``run.roles``) each front end runs in: a process runs the
#: front ends of its roles only (README "Scaling out"). Home Assistant in two: its
#: speakers are the api's targets too, and the processes hearing one event claim it once.
FRONT_END_ROLES: dict[str, tuple[str, ...]] = {
    "discord": ("gateway", "api", "coordinator"),  # without gateway: its relaying sink only
    "homeassistant": ("api", "coordinator"),
    "wyoming": ("api",),
    "scheduler": ("coordinator",),
}
