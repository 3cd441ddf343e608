"""The local Piper voice (see :mod:`integrations.piper.provider`)."""

from integrations.piper.provider import (
    BUILTIN_VOICE,
    PIECE_MAX_CHARS,
    PiperOptions,
    PiperProvider,
    PiperSettings,
)

__all__ = ["BUILTIN_VOICE", "PIECE_MAX_CHARS", "PiperOptions", "PiperProvider", "PiperSettings"]
