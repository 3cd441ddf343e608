"""``oyez check-config``: validate the configuration file and the environment, name every problem.

Beyond :func:`bot.ops.config.load`: every integration's section with its own model
(:data:`bot.configschema.SECTION_MODELS`), ``OYEZ_*`` variables that set nothing, local files
(:meth:`~bot.providers.base.Provider.local_problems`) and provider names. A problem names its key
and where it was set, suggests the nearest known key or zone, and never repeats a value. Exit 0
prints the effective configuration with secrets as ``********``; exit 2, one line per problem.
``--write-schema --write-reference`` regenerates the schema and README reference.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import os
import re
import sys
import types
import typing
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_core import to_jsonable_python
from pydantic_settings import SettingsConfigDict, SettingsError

from bot.configschema import (
    README_FILE,
    SCHEMA_FILE,
    SECTION_MODELS,
    schema_text,
    section_model,
    with_reference,
)
from bot.errors import ConfigError, UnknownProvider
from bot.ops import config
from bot.ops.logs import MASK, mask_secrets, register_secret, register_settings_secrets
from bot.providers.base import ProviderRegistry

__all__ = ["Problem", "Report", "check", "check_config", "main", "masked"]

EXIT_OK, EXIT_PROBLEMS = 0, 2
ENV_PREFIX = "OYEZ_"
#: Variables with the prefix that are not settings.
_NOT_SETTINGS = {"OYEZ_CONFIG"}
#: Keys whose values are never shown, wherever they stand.
_SECRET_NAME = re.compile(r"token|key|secret|passw", re.IGNORECASE)

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong: ``key`` dotted (``audio.loudness_target_lufs``, ``schedules[0].cron``) or
    an environment variable's name; ``origin`` the file or variable that set it, when known."""

    key: str
    message: str
    origin: str | None = None

    def __str__(self) -> str:
        where = f" (set in {self.origin})" if self.origin and self.origin != self.key else ""
        return f"{self.key}: {self.message}{where}"


@dataclass(slots=True)
class Report:
    """What :func:`check` found. ``effective`` is the masked configuration, None when there are
    problems (a value under a misspelt key might be a secret that masking does not recognise)."""

    source: str
    problems: list[Problem] = field(default_factory=list)
    effective: dict[str, Any] | None = None


class _LenientSettings(config.Settings):
    """Settings that ignore unknown keys: lets the check go on to the integrations' sections
    after the core settings had problems."""

    model_config = SettingsConfigDict(extra="ignore")


def _suggestion(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _unwrap(annotation: Any) -> Any:
    """``X`` from ``X | None`` and ``Annotated[X, ...]``; a real union stays as it is."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(options) != 1:
                return annotation
            annotation = options[0]
        else:
            return annotation


def _key_path(model: type[BaseModel], loc: Loc) -> tuple[Loc, type[BaseModel]]:
    """The part of a pydantic error location that names keys (dropping union branch tags and
    the like), and the model holding the last of them (whose fields an unknown key is
    compared with)."""
    path: list[str | int] = []
    holder = model
    annotation: Any = model
    for part in loc:
        target = _unwrap(annotation)
        origin = typing.get_origin(target)
        if isinstance(target, type) and issubclass(target, BaseModel):
            path.append(part)
            holder = target
            found = target.model_fields.get(str(part))
            if found is None:
                break
            annotation = found.annotation
        elif origin is dict:
            path.append(part)
            annotation = typing.get_args(target)[1]
        elif origin in (list, tuple, set, frozenset) and isinstance(part, int):
            path.append(part)
            annotation = typing.get_args(target)[0]
        else:
            break
    return tuple(path), holder


def _dotted(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "(top level)"


class _Checker:
    def __init__(self, yaml_path: Path | None) -> None:
        self.yaml_path = yaml_path
        self.yaml_data: Any = {}
        if yaml_path is not None:
            self.yaml_data = yaml.safe_load(yaml_path.read_text(encoding="utf-8")) or {}
        self.env = {
            name.upper(): value
            for name, value in os.environ.items()
            if name.upper().startswith(ENV_PREFIX)
        }
        self.problems: list[Problem] = []
        # Messages never quote values, but a validator of an integration might: mask anyway.
        _register_secrets(self.yaml_data)
        for name, value in self.env.items():
            if _SECRET_NAME.search(name.removeprefix(ENV_PREFIX)):
                register_secret(value)

    def origin(self, loc: Loc) -> str | None:
        """The variable (the environment wins) or the file that set ``loc``."""
        names = [str(part) for part in loc]
        for end in range(len(names), 0, -1):
            variable = ENV_PREFIX + "__".join(names[:end]).upper()
            if variable in self.env:
                return variable
        node = self.yaml_data
        for part in loc:
            in_list = isinstance(node, list) and isinstance(part, int) and part < len(node)
            if not (in_list or (isinstance(node, dict) and part in node)):
                return None
            node = node[part]
        return str(self.yaml_path)

    def add(self, loc: Loc, message: str) -> None:
        problem = Problem(_dotted(loc), message, self.origin(loc))
        if problem not in self.problems:
            self.problems.append(problem)

    def add_errors(self, error: ValidationError, model: type[BaseModel], prefix: Loc = ()) -> None:
        """One problem per key of ``error`` (a union's branches would give several)."""
        seen: set[Loc] = set()
        for item in error.errors():
            path, holder = _key_path(model, tuple(item["loc"]))
            if path in seen:
                continue
            seen.add(path)
            message = str(item["msg"]).removeprefix("Value error, ")
            if item["type"] == "extra_forbidden" and path:
                message = "unknown key" + _suggestion(str(path[-1]), list(holder.model_fields))
            elif "unknown time zone" in message and isinstance(item.get("input"), str):
                message += _suggestion(item["input"], sorted(zoneinfo.available_timezones()))
            self.add(prefix + path, message)

    def unknown_variables(self) -> None:
        """``OYEZ_*`` variables naming no setting: pydantic-settings skips them without a word."""
        fields = list(config.Settings.model_fields)
        known = [ENV_PREFIX + name.upper() for name in fields]
        for variable in sorted(self.env):
            first = variable.removeprefix(ENV_PREFIX).split("__")[0].lower()
            if variable in _NOT_SETTINGS or first in fields:
                continue
            self.problems.append(
                Problem(variable, "sets no setting" + _suggestion(variable, known), variable)
            )

    def settings(self) -> config.Settings | None:
        """The core settings; on problems, a lenient build with the bad keys at their defaults
        (so that the sections can still be checked), or None when even that fails."""
        try:
            return config.from_sources(self.yaml_path)
        except SettingsError as exc:  # an OYEZ_* value that should be JSON is not
            self.problems.append(Problem("(environment)", str(exc)))
            return None
        except ValidationError as exc:
            self.add_errors(exc, config.Settings)
            failed = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
        fields = config.Settings.model_fields
        defaults = {
            name: fields[name].get_default(call_default_factory=True)
            for name in failed
            if name in fields
        }
        try:
            return config.from_sources(self.yaml_path, _LenientSettings, **defaults)
        except (ValidationError, SettingsError):
            return None

    def sections(self, settings: config.Settings) -> dict[str, Any]:
        """Validate the integrations' sections; returns each one as validated (or as it is when
        its model is not there)."""
        validated: dict[str, Any] = {}
        for name in SECTION_MODELS:
            value = getattr(settings, name, None)
            model = section_model(name)
            if value is None or model is None:
                validated[name] = value
                continue
            items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
            results = []
            for index, item in items:
                prefix: Loc = (name,) if index is None else (name, index)
                try:
                    results.append(model.model_validate(item))
                except ValidationError as exc:
                    self.add_errors(exc, model, prefix)
            validated[name] = results if isinstance(value, list) else results[0] if results else {}
        return validated

    async def providers(self, settings: config.Settings) -> dict[str, Any]:
        """Validate ``providers.<name>``; ask each provider about its files; check the names
        that refer to providers. Returns every provider's section as validated (defaults for the
        built-in ones not configured)."""
        register_settings_secrets(settings)
        registry = ProviderRegistry.default(settings)
        validated: dict[str, Any] = {}
        names = registry.names()
        try:
            for name in [*settings.providers, *(n for n in names if n not in settings.providers)]:
                section = settings.providers.get(name, {})
                if not isinstance(section, dict):
                    self.add(("providers", name), "must be a mapping of keys")
                    continue
                try:
                    provider_class = registry.implementation(name)
                except UnknownProvider:
                    self.add(("providers", name), "unknown provider" + _suggestion(name, names))
                    continue
                except ConfigError as exc:
                    self.add(("providers", name, "type"), str(exc).split(": ", 1)[-1])
                    continue
                except (ImportError, AttributeError, TypeError) as exc:  # a broken plug-in
                    self.add(("providers", name), f"cannot be loaded: {type(exc).__name__}: {exc}")
                    continue
                body = {k: v for k, v in section.items() if k != "type"}
                try:
                    provider_settings = provider_class.settings_model.model_validate(body)
                except ValidationError as exc:
                    self.add_errors(exc, provider_class.settings_model, ("providers", name))
                    continue
                kind = {"type": section["type"]} if "type" in section else {}
                validated[name] = {**kind, **dict(provider_settings)}
                provider = registry.get(name)
                for key, message in await provider.local_problems():
                    self.add(("providers", name, key) if key else ("providers", name), message)
        finally:
            await registry.aclose()
        self.provider_names(settings, names)
        return validated

    def provider_names(self, settings: config.Settings, names: list[str]) -> None:
        if settings.default_provider.strip().lower() not in names:
            self.add(
                ("default_provider",),
                "unknown provider" + _suggestion(settings.default_provider, names),
            )
        for index, entry in enumerate(settings.fallback):
            provider = entry.split("/", 1)[0].strip().lower()
            if entry.casefold() not in settings.voices and provider not in names:
                choices = [*names, *settings.voices]
                self.add(
                    ("fallback", index),
                    f"{entry!r} is neither a provider nor a named voice"
                    + _suggestion(entry, choices),
                )
        for alias, voice in settings.voices.items():
            if voice.provider.strip().lower() not in names:
                self.add(
                    ("voices", alias, "provider"),
                    "unknown provider" + _suggestion(voice.provider, names),
                )


def _register_secrets(value: Any, key: str = "") -> None:
    if isinstance(value, dict):
        for name, item in value.items():
            _register_secrets(item, str(name))
    elif isinstance(value, list):
        for item in value:
            _register_secrets(item, key)
    elif key and _SECRET_NAME.search(key) and value is not None:
        register_secret(str(value))


def masked(value: Any, key: str = "") -> Any:
    """``value`` as plain YAML/JSON data with every secret replaced by ``********``: every
    ``SecretStr`` and every value under a key named like a token, key, secret or password."""
    if isinstance(value, SecretStr):
        return MASK if value.get_secret_value() else ""
    if key and _SECRET_NAME.search(key) and value not in (None, "", [], {}):
        return MASK
    if isinstance(value, BaseModel):
        return {name: masked(getattr(value, name), name) for name in type(value).model_fields}
    if isinstance(value, dict):
        return {str(k): masked(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [masked(item) for item in value]
    return to_jsonable_python(value)


async def check(path: Path | None = None) -> Report:
    """Check the configuration :func:`bot.config.load` would read with ``path``."""
    try:
        yaml_path = config.source_file(path)
    except ConfigError as exc:
        return Report("the configuration file", [Problem("(file)", str(exc))])
    checker = _Checker(yaml_path)
    source = f"{yaml_path} and the OYEZ_* environment" if yaml_path else "the OYEZ_* environment"
    checker.unknown_variables()
    settings = checker.settings()
    if settings is None:
        return Report(source, checker.problems)
    sections = checker.sections(settings)
    providers = await checker.providers(settings)
    report = Report(source, checker.problems)
    if not report.problems:
        effective = masked(settings)
        effective.update({name: masked(value, name) for name, value in sections.items()})
        effective["providers"] = masked(providers)
        report.effective = effective
    return report


def check_config(path: Path | None = None, schema: bool = False) -> int:
    """``oyez check-config``: print the report; returns the exit status (0 or 2)."""
    if schema:
        sys.stdout.write(schema_text())
        return EXIT_OK
    report = asyncio.run(check(path))
    if report.problems:
        count = len(report.problems)
        print(
            f"oyez check-config: {count} problem{'s' if count > 1 else ''} in {report.source}:",
            file=sys.stderr,
        )
        for problem in report.problems:
            print(mask_secrets(f"  {problem}"), file=sys.stderr)
        return EXIT_PROBLEMS
    print(f"# The effective configuration, from {report.source}; secrets are shown as {MASK}.")
    text = yaml.safe_dump(report.effective, sort_keys=False, allow_unicode=True)
    print(mask_secrets(text), end="")
    print("configuration OK")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bot.checkconfig``: check, or regenerate the schema and README reference."""
    parser = argparse.ArgumentParser(prog="python -m bot.checkconfig", description=__doc__)
    parser.add_argument("--config", type=Path, help="YAML configuration file to check")
    parser.add_argument("--write-schema", action="store_true", help=f"rewrite {SCHEMA_FILE.name}")
    parser.add_argument(
        "--write-reference",
        action="store_true",
        help="rewrite the configuration reference in README.md",
    )
    args = parser.parse_args(argv)
    if not (args.write_schema or args.write_reference):
        return check_config(args.config)
    if args.write_schema:
        SCHEMA_FILE.write_text(schema_text(), encoding="utf-8")
        print(f"wrote {SCHEMA_FILE}")
    if args.write_reference:
        readme = README_FILE.read_text(encoding="utf-8")
        README_FILE.write_text(with_reference(readme), encoding="utf-8")
        print(f"wrote the configuration reference in {README_FILE}")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
