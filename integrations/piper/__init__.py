"""The local Piper voice (see :mod:`integrations.piper.provider`)."""

from integrations.piper.provider import BUILTIN_VOICE, PiperOptions, PiperProvider, PiperSettings

__all__ = ["BUILTIN_VOICE", "PiperOptions", "PiperProvider", "PiperSettings"]
