"""The local Piper voice (see :mod:`integrations.piper.provider`).

The names below are imported on first use: :mod:`integrations.piper.models` (the head start of a
cold ``oyez say``) is imported before pydantic and the configuration, which the provider needs.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from integrations.piper.provider import (
        BUILTIN_VOICE,
        PIECE_MAX_CHARS,
        PiperOptions,
        PiperProvider,
        PiperSettings,
    )

__all__ = ["BUILTIN_VOICE", "PIECE_MAX_CHARS", "PiperOptions", "PiperProvider", "PiperSettings"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(import_module("integrations.piper.provider"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
