"""Oyez's SQLite files: one name for the state file, connections opened late and used in turn."""

from __future__ import annotations

import ast
import concurrent.futures
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from bot.ops.store import STATE_FILE, Database, NotWritable, connect, open_state, state_path
from tests.support.paths import ROOT
from tests.support.sqlite import read_only_connect


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


def test_a_folder_sqlite_cannot_write_is_named_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite3, "connect", read_only_connect(tmp_path))
    with pytest.raises(NotWritable) as caught:
        open_state(tmp_path, "CREATE TABLE IF NOT EXISTS t (x)")
    message = str(caught.value)
    assert str(state_path(tmp_path)) in message
    assert "unable to open database file" in message
    assert f"make {tmp_path} writable" in message
    assert "OYEZ_DATA_DIR" in message


def test_a_path_through_a_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(NotWritable, match=r"cannot write .*file/data/oyez\.sqlite3"):
        open_state(tmp_path / "file" / "data", "CREATE TABLE IF NOT EXISTS t (x)")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_data_folder_is_named(tmp_path: Path) -> None:
    open_state(tmp_path, "CREATE TABLE IF NOT EXISTS t (x)").close()
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(NotWritable, match="OYEZ_DATA_DIR"):
            open_state(tmp_path, "CREATE TABLE IF NOT EXISTS t (x)")
    finally:
        tmp_path.chmod(0o755)


def test_processes_opening_one_new_file_together_all_get_it(tmp_path: Path) -> None:
    """Several processes opening a new shared file at once (a shared cache index) each get it:
    SQLite answers the switch to WAL "database is locked" at once, without its busy timeout,
    when it meets another connection's lock."""
    schema = "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v TEXT);"
    for attempt in range(20):
        path = tmp_path / f"shared-{attempt}.sqlite3"
        start = threading.Barrier(6)

        def opened(path: Path = path, start: threading.Barrier = start) -> str:
            start.wait()
            db = connect(path, schema)
            try:
                return str(db.execute("PRAGMA journal_mode").fetchone()[0])
            finally:
                db.close()

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            modes = list(pool.map(lambda _: opened(), range(6)))
        assert modes == ["wal"] * 6
