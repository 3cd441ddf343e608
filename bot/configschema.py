"""The configuration's JSON Schema (``config/oyez.schema.json``) and the README's reference table.

:class:`~bot.config.Settings` keeps its integration sections (``providers.<name>``, ``discord``,
``homeassistant``) as plain mappings, each validated by its integration's own model. The schema
puts those models in their places, so that an editor completes ``discord:`` and
``providers: piper:`` keys as well as the core ones. The reference table in README.md (every key,
its environment variable and its default) is made from the same schema, with each key's meaning
taken from its comment in ``config/oyez.example.yaml`` (else the field's description).

Both are generated and kept in the repository; ``python -m bot.checkconfig --write-schema
--write-reference`` rewrites them, and the tests fail while they are out of date.
"""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, models_json_schema
from pydantic_core import core_schema

from bot.ops.config import Settings

__all__ = [
    "EXAMPLE_FILE",
    "README_FILE",
    "REFERENCE_MARKERS",
    "SCHEMA_FILE",
    "SECTION_MODELS",
    "ReferenceRow",
    "configuration_schema",
    "example_comments",
    "provider_settings_models",
    "reference_rows",
    "reference_table",
    "schema_text",
    "section_model",
    "with_reference",
]

_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_FILE = _ROOT / "config" / "oyez.schema.json"
EXAMPLE_FILE = _ROOT / "config" / "oyez.example.yaml"
README_FILE = _ROOT / "README.md"
REFERENCE_MARKERS = ("<!-- config-reference:start -->", "<!-- config-reference:end -->")

#: Sections of Settings kept as plain mappings (or lists of them, like ``schedules``), and the
#: model of the part of Oyez that validates each (each item of a list).
SECTION_MODELS: dict[str, str] = {
    "discord": "integrations.discord.settings:DiscordSettings",
    "homeassistant": "integrations.homeassistant.settings:HomeAssistantSettings",
    "schedules": "bot.schedules.model:Schedule",
}


def section_model(section: str) -> type[BaseModel] | None:
    """The model validating ``section`` (a key of :data:`SECTION_MODELS`; for a list, each of its
    items), imported now; None when its module does not provide one yet (the section is then
    left as it is)."""
    module_name, _, attr = SECTION_MODELS[section].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            return None
        raise
    model = getattr(module, attr, None)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def provider_settings_models() -> dict[str, type[BaseModel]]:
    """Each built-in provider's ``settings_model``, by provider name (``integrations.PROVIDERS``;
    plug-ins are left out so that the committed schema does not depend on what is installed)."""
    from bot.providers.base import Provider
    from integrations import PROVIDERS

    models: dict[str, type[BaseModel]] = {}
    for name, target in PROVIDERS.items():
        module_name, _, attr = target.partition(":")
        provider = getattr(importlib.import_module(module_name), attr)
        if not (isinstance(provider, type) and issubclass(provider, Provider)):
            raise TypeError(f"{target} is not a Provider subclass")
        models[name] = provider.settings_model
    return models


class _WithFactoryDefaults(GenerateJsonSchema):
    """Shows defaults made by a ``default_factory`` (``fallback: ["piper"]``, ``{}``) too; a
    nested model's defaults already stand in its own definition."""

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            value = cast(Any, factory)()
            if not isinstance(value, BaseModel):
                copy = cast(dict[str, Any], dict(schema))
                del copy["default_factory"]
                copy["default"] = value
                schema = cast(core_schema.WithDefaultSchema, copy)
        return super().default_schema(schema)


def configuration_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the configuration file."""
    sections = {name: m for name in SECTION_MODELS if (m := section_model(name)) is not None}
    providers = provider_settings_models()
    models: list[type[BaseModel]] = [Settings, *sections.values(), *providers.values()]
    refs, top = models_json_schema(
        [(m, "validation") for m in models], schema_generator=_WithFactoryDefaults
    )
    defs: dict[str, Any] = top["$defs"]

    def ref(model: type[BaseModel]) -> str:
        return str(refs[(model, "validation")]["$ref"])

    root = defs.pop(ref(Settings).rsplit("/", 1)[-1])
    properties: dict[str, Any] = root["properties"]
    for name, model in sections.items():
        described = {"description": properties[name]["description"]}
        if properties[name].get("type") == "array":
            properties[name] = {"type": "array", "items": {"$ref": ref(model)}, **described}
        else:
            properties[name] = {"$ref": ref(model), **described}

    for kind, model in providers.items():
        definition = defs[ref(model).rsplit("/", 1)[-1]]
        definition["properties"]["type"] = {
            "const": kind,
            "default": kind,
            "description": f"The provider's implementation ({kind}); needed under other names",
        }
    properties["providers"] = {
        "type": "object",
        "description": "One section per provider; a section under a name of your own "
        "(a second OpenAI-compatible server) says which implementation with type:",
        "default": {},
        "properties": {kind: {"$ref": ref(model)} for kind, model in providers.items()},
        "additionalProperties": {
            "anyOf": [
                {"allOf": [{"$ref": ref(model)}], "required": ["type"]}
                for model in providers.values()
            ]
        },
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Oyez configuration",
        "description": "oyez.yaml: see config/oyez.example.yaml. Generated by "
        "`python -m bot.checkconfig --write-schema`; do not edit.",
        **{k: v for k, v in root.items() if k not in ("title", "description")},
        "$defs": dict(sorted(defs.items())),
    }


def schema_text() -> str:
    """:func:`configuration_schema` as the committed file holds it."""
    return json.dumps(configuration_schema(), indent=2, ensure_ascii=False) + "\n"


@dataclass(frozen=True, slots=True)
class ReferenceRow:
    """One key of the reference: ``key`` dotted (``<name>`` for a name of your choosing, ``[]``
    for each item of a list), the environment variable that sets it and how (``env_note``: its
    value is JSON), its default as shown in the table, and what it means."""

    key: str
    env: str
    env_note: str
    default: str
    meaning: str


_KEY_LINE = re.compile(r"([A-Za-z_]\w*)\s*:(.*)$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(])")


def example_comments(text: str) -> dict[str, str]:
    """Dotted key → the comment written above it (or after it on its line) in the example file.

    Commented-out examples (``#  grandma:``, two spaces or more after the ``#``) are not comments
    about the next key.
    """
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    block: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            block = []
            continue
        if stripped.startswith("#"):
            body = stripped[1:]
            if body.startswith("  "):
                block = []
            else:
                block.append(body.strip())
            continue
        match = _KEY_LINE.match(stripped)
        if match is not None:
            indent = len(line) - len(line.lstrip(" "))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            key = ".".join([k for _, k in stack] + [match[1]])
            _, _, inline = match[2].partition(" #")
            comment = " ".join(block) or inline.strip()
            if comment:
                comments[key] = comment
            stack.append((indent, match[1]))
        block = []
    return comments


def _summary(text: str, least: int = 40) -> str:
    """The first sentences of ``text``, at least ``least`` characters when it has them."""
    summary = ""
    for sentence in _SENTENCE_END.split(text.strip()):
        summary = f"{summary} {sentence}".strip()
        if len(summary) >= least:
            break
    return summary


def _format_default(node: dict[str, Any]) -> str:
    if "default" not in node:
        return "required"
    value = node["default"]
    if value is None:
        return "none"
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def reference_rows(
    schema: dict[str, Any] | None = None, comments: dict[str, str] | None = None
) -> list[ReferenceRow]:
    """Every key of ``schema`` (default: :func:`configuration_schema`), depth first, in the
    order of the models' fields."""
    schema = schema or configuration_schema()
    if comments is None:
        example = EXAMPLE_FILE.read_text(encoding="utf-8") if EXAMPLE_FILE.is_file() else ""
        comments = example_comments(example)
    defs: dict[str, Any] = schema["$defs"]
    rows: list[ReferenceRow] = []

    def walk(node: dict[str, Any], path: list[str], in_list: str | None = None) -> None:
        node = _resolve(node, defs)
        extra = node.get("additionalProperties")
        if "properties" in node:
            for name, child in node["properties"].items():
                walk(child, [*path, name], in_list)
            if isinstance(extra, dict) and "anyOf" in extra:
                kinds = [
                    str(_resolve(branch, defs)["properties"]["type"]["const"])
                    for branch in extra["anyOf"]
                ]
                rows.append(_named_instance_row(path, kinds))
            return
        if isinstance(extra, dict) and "properties" in _resolve(extra, defs):
            walk(extra, [*path, "<name>"], in_list)
            return
        items = node.get("items")
        if in_list is None and isinstance(items, dict) and "properties" in _resolve(items, defs):
            walk(items, [*path[:-1], f"{path[-1]}[]"], _env_name(path))
            return
        if "const" in node:  # a provider section's `type`: the <name> row tells of it
            return
        rows.append(_leaf_row(node, path, in_list, comments))

    walk(schema, [])
    return rows


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """``node`` with its ``$ref``, single ``allOf`` and nullable ``anyOf`` followed into
    ``defs``, keeping its sibling keys (description, default)."""
    while True:
        if "$ref" in node:
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            node = {**defs[node["$ref"].rsplit("/", 1)[-1]], **siblings}
        elif len(node.get("allOf", ())) == 1:
            siblings = {k: v for k, v in node.items() if k != "allOf"}
            node = {**node["allOf"][0], **siblings}
        elif "anyOf" in node:
            branches = [b for b in node["anyOf"] if b.get("type") != "null"]
            if len(branches) != 1 or not ("$ref" in branches[0] or "properties" in branches[0]):
                return node
            siblings = {k: v for k, v in node.items() if k != "anyOf"}
            node = {**branches[0], **siblings}
        else:
            return node


def _named_instance_row(path: list[str], kinds: list[str]) -> ReferenceRow:
    """The ``<path>.<name>`` row of a mapping of provider sections of the ``kinds`` types."""
    return ReferenceRow(
        key=".".join([*path, "<name>"]),
        env=_env_name([*path, "<name>"]) + "__…",
        env_note="",
        default="none",
        meaning="Another instance of a provider under a name of your own: "
        f"`type:` ({', '.join(kinds)}) and that provider's keys",
    )


def _leaf_row(
    node: dict[str, Any], path: list[str], in_list: str | None, comments: dict[str, str]
) -> ReferenceRow:
    """The row of a key holding a value; ``in_list`` is the environment variable of the list
    of models it is a field of, if any."""
    key = ".".join(path)
    json_env = node.get("type") in ("array", "object") or "additionalProperties" in node
    meaning = _summary(comments.get(key, "") or node.get("description", ""))
    if in_list is not None:
        env, note, default = in_list, "(a JSON list)", _format_default(node)
    else:
        env, note, default = (
            _env_name(path),
            "(JSON)" if json_env else "",
            _format_default(node),
        )
    return ReferenceRow(key, env, note, default, meaning)


def _env_name(path: list[str]) -> str:
    return "OYEZ_" + "__".join(part.upper().removesuffix("[]") for part in path)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def reference_table(rows: list[ReferenceRow] | None = None) -> str:
    """The Markdown table that README.md holds between :data:`REFERENCE_MARKERS`."""
    rows = reference_rows() if rows is None else rows
    lines = [
        "| key | environment | default | meaning |",
        "|---|---|---|---|",
    ]
    for row in rows:
        env = f"`{row.env}` {row.env_note}".strip()
        lines.append(f"| `{row.key}` | {env} | {_cell(row.default)} | {_cell(row.meaning)} |")
    return "\n".join(lines)


def with_reference(readme: str, table: str | None = None) -> str:
    """``readme`` with the reference table between its markers replaced by ``table`` (default:
    :func:`reference_table`). Raises ValueError when the markers are missing."""
    start, end = REFERENCE_MARKERS
    if start not in readme or end not in readme:
        raise ValueError(f"README.md has no {start} … {end} markers")
    head, rest = readme.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{table or reference_table()}\n{end}{tail}"
