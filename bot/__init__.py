"""Oyez: turns Discord commands, Home Assistant events and schedules into speech."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("oyez")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
