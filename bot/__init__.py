"""Oyez: turns Discord commands, Home Assistant events and schedules into speech."""

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    # The version is read from the installed metadata on first use, not at import:
    # importlib.metadata alone costs ~15 ms, which `oyez --help` need not pay.
    if name != "__version__":
        raise AttributeError(f"module 'bot' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("oyez")
    except PackageNotFoundError:  # running from a source tree that is not installed
        found = "0.0.0+unknown"
    globals()["__version__"] = found
    return found
