"""Oyez's SQLite files: one name for the state file, connections opened late and used in turn."""

from __future__ import annotations

import ast
import sqlite3
from pathlib import Path

import pytest

from bot.ops.store import STATE_FILE, Database, open_state, state_path
from tests.support.paths import ROOT


def _code_strings(source: str) -> list[str]:
    """The string constants of a module that are not docstrings."""
    tree = ast.parse(source)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_the_state_file_is_named_only_in_bot_ops_store() -> None:
    naming = [
        path.relative_to(ROOT).as_posix()
        for folder in ("bot", "integrations")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if any(STATE_FILE in text for text in _code_strings(path.read_text(encoding="utf-8")))
    ]
    assert naming == ["bot/ops/store.py"]


async def test_a_database_opens_on_first_use_and_refuses_calls_once_closed(tmp_path: Path) -> None:
    opened: list[sqlite3.Connection] = []

    def opener() -> sqlite3.Connection:
        opened.append(open_state(tmp_path, "CREATE TABLE IF NOT EXISTS t (x INTEGER);"))
        return opened[-1]

    db = Database(opener)
    assert not opened and not state_path(tmp_path).exists()  # nothing opened yet
    await db.call(lambda c: c.execute("INSERT INTO t VALUES (1)"))
    assert db.blocking(lambda c: c.execute("SELECT x FROM t").fetchall()) == [(1,)]
    assert len(opened) == 1
    db.close()
    with pytest.raises(sqlite3.ProgrammingError):
        await db.call(lambda c: c.execute("SELECT x FROM t"))
    assert len(opened) == 1  # not opened again
