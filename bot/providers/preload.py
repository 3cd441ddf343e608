"""A head start for a cold ``oyez say``: the provider's model starts loading in a background
thread before the configuration, pydantic and the pipeline are imported (issue #16).

The guess is made from the raw configuration (the YAML mapping and the ``OYEZ_*`` variables that
choose a provider or a voice) without validating it; whenever it is unsure (a named voice, a
whole ``OYEZ_PROVIDERS`` variable, a file that does not parse) it makes none. A wrong guess costs
CPU time only: what speaks is what the validated configuration resolves.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import import_module
from pathlib import Path
from typing import Any, Protocol

from integrations import PRELOADS

__all__ = ["HeadStart", "head_start"]


class HeadStart(Protocol):
    """A model loading in a background thread."""

    def join(self) -> None:
        """Wait until it is loaded (or failed)."""

    def settle(self) -> None:
        """Wait until no file it writes is half-written, and keep it from starting another:
        after this the process may end with ``os._exit`` while it still loads."""


DEFAULT_CONFIG_FILE = Path("oyez.yaml")  # bot.ops.config's, which this module must not import


def _raw_file(path: Path | None, environ: Mapping[str, str]) -> dict[str, Any] | None:
    """The YAML mapping ``load`` would read ({} when there is no file), None when unsure."""
    if path is None:
        from_env = environ.get("OYEZ_CONFIG")
        path = Path(from_env) if from_env else DEFAULT_CONFIG_FILE
        if not from_env and not path.is_file():
            return {}
    try:
        import yaml

        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return content if isinstance(content, dict) else ({} if content is None else None)


def _raw_settings(path: Path | None, environ: Mapping[str, str]) -> dict[str, Any] | None:
    """The keys the guess reads, the environment over the file (as pydantic-settings does)."""
    raw = _raw_file(path, environ)
    if raw is None:
        return None
    env = {k.upper(): v for k, v in environ.items() if k.upper().startswith("OYEZ_")}
    if "OYEZ_PROVIDERS" in env or "OYEZ_VOICES" in env:
        return None
    for key in ("default_provider", "default_voice"):
        if f"OYEZ_{key.upper()}" in env:
            raw[key] = env[f"OYEZ_{key.upper()}"]
    return raw


def head_start(
    config: Path | None,
    provider: str | None,
    voice: str | None,
    model: str | None,
    environ: Mapping[str, str] = os.environ,
) -> HeadStart | None:
    """Start loading the model ``oyez say`` (``--config``, ``--provider``, ``--voice``,
    ``--model``; None: not given) will most likely need; returns the load, which the caller
    joins (or settles) before the process ends, or None when no guess was made."""
    raw = _raw_settings(config, environ)
    if raw is None:
        return None
    default_provider = raw.get("default_provider") or "piper"
    name = provider or default_provider
    if voice is None and name == default_provider:
        voice = raw.get("default_voice")
    voices, providers = raw.get("voices") or {}, raw.get("providers") or {}
    if not isinstance(voices, dict) or not isinstance(providers, dict):
        return None
    if not isinstance(name, str) or not isinstance(voice, str | None):
        return None
    if voice is not None and voice.casefold() in {str(k).casefold() for k in voices}:
        return None  # a named voice: its provider and voice are the configuration's
    target = PRELOADS.get(name)
    if target is None:
        return None
    env_prefix = f"OYEZ_PROVIDERS__{name.upper()}__"
    section = dict(providers.get(name) or {})
    section.update(
        {
            k[len(env_prefix) :].lower(): v
            for k, v in environ.items()
            if k.upper().startswith(env_prefix)
        }
    )
    module, _, attribute = target.partition(":")
    start = getattr(import_module(module), attribute)
    loading: HeadStart | None = start(section, voice, model)
    return loading
