"""The import contracts of ``bot/`` and ``integrations/``, read from the source with ``ast``.

Every import counts: at the top of a module, inside a function, under ``TYPE_CHECKING``. An
import of ``a.b.c`` (or ``from a.b import c``) is an edge to the module ``a.b.c`` itself, not to
the packages around it. String ``"module:attribute"`` entries of the registries are not imports.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterable
from pathlib import Path

import pytest

from integrations import FRONT_ENDS, PROVIDERS

ROOT = Path(__file__).resolve().parent.parent
Edge = tuple[str, str]

#: The modules of ``bot/`` that read the registries of the ``integrations`` package.
REGISTRY_READERS = {
    "bot.providers.base",
    "bot.providers.preload",
    "bot.configschema",
    "bot.service",
}
#: What ``bot/providers/`` stands below: it never imports these.
ABOVE_PROVIDERS = ("bot.announce", "bot.schedules", "bot.web", "bot.synthesis")


def modules() -> dict[str, Path]:
    """Every module of ``bot/`` and ``integrations/``, by dotted name (a package by its own)."""
    found = {}
    for top in ("bot", "integrations"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(node: ast.Import | ast.ImportFrom, package: str, known: dict[str, Path]) -> list[str]:
    """The dotted names one import statement in ``package`` names, relative ones resolved."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        stem = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join([*stem, base] if base else stem)
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]


def imports_of(name: str, source: str, known: dict[str, Path]) -> set[Edge]:
    """(``name``, imported) for each import in ``source`` of a module in ``known``."""
    package = name if known[name].name == "__init__.py" else name.rpartition(".")[0]
    edges = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        for target in imported(node, package, known):
            while target and target not in known:  # an attribute or a third-party module
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.add((name, target))
    return edges


def graph() -> set[Edge]:
    """(importer, imported) for every import between two modules of ours."""
    known = modules()
    return {e for n, p in known.items() for e in imports_of(n, p.read_text("utf-8"), known)}


def cycles(edges: set[Edge]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    after: dict[str, list[str]] = {}
    for source, target in sorted(edges):
        after.setdefault(source, []).append(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in after.get(node, []):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(after):
        if node not in index:
            visit(node)
    return found


def within(name: str, *packages: str) -> bool:
    """Whether module ``name`` is one of ``packages`` or inside one."""
    return any(name == p or name.startswith(f"{p}.") for p in packages)


EDGES = graph()


def new(violations: Iterable[Edge]) -> list[Edge]:
    """The ``violations``, sorted and without repeats."""
    return sorted(set(violations))


def test_no_import_cycle() -> None:
    assert cycles(EDGES) == []


def test_bot_reaches_integrations_only_through_the_registries() -> None:
    reaching = [(s, t) for s, t in EDGES if within(s, "bot") and within(t, "integrations")]
    allowed = {(reader, "integrations") for reader in REGISTRY_READERS}
    assert new(e for e in reaching if e not in allowed) == []


def test_providers_never_import_the_stages_above_them() -> None:
    assert (
        new((s, t) for s, t in EDGES if within(s, "bot.providers") and within(t, *ABOVE_PROVIDERS))
        == []
    )


def test_imports_inside_functions_and_under_type_checking_count() -> None:
    known = {"bot.a": Path("bot/a.py"), "bot.b": Path("bot/b.py"), "bot.c": Path("bot/c.py")}
    source = """
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from bot.b import Thing
def later() -> None:
    import bot.c.attribute
"""
    assert imports_of("bot.a", source, known) == {("bot.a", "bot.b"), ("bot.a", "bot.c")}
    assert cycles({("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")}) == [["a", "b", "c"]]


@pytest.mark.parametrize("target", [*PROVIDERS.values(), *FRONT_ENDS.values()])
def test_every_registry_entry_names_something_that_exists(target: str) -> None:
    module_name, _, attribute = target.partition(":")
    assert callable(getattr(importlib.import_module(module_name), attribute))
