"""SQLite writes: the write gate (processes and threads take turns, a waiter that gives up
hands it back), writers of two processes on one file all get through, and a writer outside
relay holding the lock is waited for without stopping the event loop."""

from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path

import pytest
from sqlalchemy import text

from relay.config import DatabaseConfig
from relay.store.db import Database
from relay.store.write_gate import WriteGate, gate_for

SPAWN = multiprocessing.get_context("spawn")


def _try_in_child(lock_path: str, answer: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    gate = WriteGate(lock_path)
    got = gate.try_acquire()
    if got:
        gate.release()
    answer.put(got)


def _other_process_can_take(lock_path: Path) -> bool:
    answer = SPAWN.Queue()
    child = SPAWN.Process(target=_try_in_child, args=(str(lock_path), answer))
    child.start()
    child.join(60)
    return bool(answer.get(timeout=5))


def test_a_held_gate_keeps_other_processes_and_threads_out_until_it_is_let_go(
    tmp_path: Path,
) -> None:
    gate = WriteGate(str(tmp_path / "db-writer.lock"))
    assert _other_process_can_take(tmp_path / "db-writer.lock")
    gate.acquire()
    assert not gate.try_acquire()  # another writer of this process waits too
    assert not _other_process_can_take(tmp_path / "db-writer.lock")
    gate.release()
    assert _other_process_can_take(tmp_path / "db-writer.lock")
    assert gate.try_acquire()
    gate.release()


def test_one_gate_per_database_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    same = gate_for(str(tmp_path / "sub" / ".." / "relay.db"))
    assert gate_for(str(tmp_path / "relay.db")) is same
    assert gate_for(str(tmp_path / "other.db")) is not same
    assert same.lock_path == str(tmp_path / "relay.db") + "-writer.lock"


def _hold_for(lock_path: str, seconds: float, holding: multiprocessing.Event) -> None:  # type: ignore[type-arg]
    import time

    gate = WriteGate(lock_path)
    gate.acquire()
    holding.set()
    time.sleep(seconds)
    gate.release()


async def test_a_cancelled_waiter_hands_the_gate_back_once_it_gets_it(tmp_path: Path) -> None:
    lock_path = str(tmp_path / "db-writer.lock")
    holding = SPAWN.Event()
    holder = SPAWN.Process(target=_hold_for, args=(lock_path, 1.0, holding))
    holder.start()
    assert await asyncio.to_thread(holding.wait, 60)
    gate = WriteGate(lock_path)

    async def write() -> None:
        async with gate.held():
            pytest.fail("the other process holds the gate: this writer must still wait")

    waiter = asyncio.create_task(write())
    await asyncio.sleep(0.2)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await asyncio.to_thread(holder.join, 60)
    # The waiter thread got the gate after the holder let go, and gave it straight back.
    for _ in range(100):
        if gate.try_acquire():
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the gate stayed taken after the cancelled waiter got it")
    gate.release()
    assert await asyncio.to_thread(_other_process_can_take, Path(lock_path))


def _write_rows(url: str, start: int, count: int) -> None:
    async def main() -> None:
        db = Database.from_config(DatabaseConfig(url=url, busy_timeout=30.0))
        try:
            for i in range(start, start + count, 5):
                async with db.write() as conn:  # the async path
                    for n in range(i, i + 5):
                        await conn.execute(text("INSERT INTO t (n) VALUES (:n)"), {"n": n})

                def insert(conn: object, first: int = i) -> None:  # the writer thread's path
                    conn.execute(text("INSERT INTO t (n) VALUES (:n)"), {"n": -first})  # type: ignore[attr-defined]

                await db.run_write(insert)
        finally:
            await db.dispose()

    asyncio.run(main())


async def test_writers_of_two_processes_and_both_paths_all_get_through(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'relay.db'}"
    db = Database.from_config(DatabaseConfig(url=url))
    try:
        async with db.write() as conn:
            await conn.execute(text("CREATE TABLE t (n INTEGER PRIMARY KEY)"))
        children = [
            SPAWN.Process(target=_write_rows, args=(url, start, 200)) for start in (1, 1001)
        ]
        for child in children:
            child.start()
        await asyncio.gather(*(asyncio.to_thread(c.join, 120) for c in children))
        assert [c.exitcode for c in children] == [0, 0]
        async with db.read() as conn:
            rows = {n for (n,) in await conn.execute(text("SELECT n FROM t"))}
        expected = {*range(1, 201), *range(1001, 1201)}
        expected |= {-i for i in (*range(1, 201, 5), *range(1001, 1201, 5))}
        assert rows == expected
    finally:
        await db.dispose()


async def test_a_foreign_writer_is_waited_for_while_the_loop_keeps_running(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "relay.db"
    db = Database.from_config(DatabaseConfig(url=f"sqlite+aiosqlite:///{path}", busy_timeout=10))
    try:
        async with db.write() as conn:
            await conn.execute(text("CREATE TABLE t (n INTEGER PRIMARY KEY)"))
        shell = sqlite3.connect(path, isolation_level=None)  # like the sqlite3 shell
        shell.execute("BEGIN IMMEDIATE")
        shell.execute("INSERT INTO t (n) VALUES (1)")

        async def write() -> None:
            async with db.write() as conn:
                await conn.execute(text("INSERT INTO t (n) VALUES (2)"))

        writer = asyncio.create_task(write())
        ticks = 0
        for _ in range(20):  # the loop runs while the writer waits for the lock
            await asyncio.sleep(0.01)
            ticks += 1
        assert not writer.done()
        shell.execute("COMMIT")
        await asyncio.wait_for(writer, 10)
        assert ticks == 20
        async with db.read() as conn:
            assert [n for (n,) in await conn.execute(text("SELECT n FROM t ORDER BY n"))] == [1, 2]
        shell.close()
    finally:
        await db.dispose()


async def test_a_foreign_writer_holding_on_past_busy_timeout_fails_the_write(
    tmp_path: Path,
) -> None:
    import sqlite3

    from sqlalchemy.exc import OperationalError

    path = tmp_path / "relay.db"
    url = f"sqlite+aiosqlite:///{path}"
    db = Database.from_config(DatabaseConfig(url=url, busy_timeout=0.3))
    try:
        async with db.write() as conn:
            await conn.execute(text("CREATE TABLE t (n INTEGER PRIMARY KEY)"))
        shell = sqlite3.connect(path, isolation_level=None)
        shell.execute("BEGIN IMMEDIATE")
        with pytest.raises(OperationalError, match="locked"):
            async with db.write() as conn:
                await conn.execute(text("INSERT INTO t (n) VALUES (2)"))
        shell.execute("ROLLBACK")
        shell.close()
        async with db.write() as conn:  # the gate was let go: the next write goes through
            await conn.execute(text("INSERT INTO t (n) VALUES (3)"))
    finally:
        await db.dispose()


async def test_an_exception_rolls_the_inline_transaction_back(tmp_path: Path) -> None:
    db = Database.from_config(DatabaseConfig(url=f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"))
    try:
        async with db.write() as conn:
            await conn.execute(text("CREATE TABLE t (n INTEGER PRIMARY KEY)"))
        with pytest.raises(RuntimeError):
            async with db.write() as conn:
                await conn.execute(text("INSERT INTO t (n) VALUES (1)"))
                async with conn.begin_nested():
                    await conn.execute(text("INSERT INTO t (n) VALUES (2)"))
                raise RuntimeError("the caller's own trouble")
        assert await db.run_write(lambda c: c.execute(text("SELECT count(*) FROM t")).scalar()) == 0
    finally:
        await db.dispose()


async def test_a_write_opened_inside_another_fails_at_once_instead_of_waiting_for_itself(
    tmp_path: Path,
) -> None:
    db = Database.from_config(DatabaseConfig(url=f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"))
    try:
        async with db.write() as conn:
            await conn.execute(text("CREATE TABLE t (n INTEGER PRIMARY KEY)"))
        with pytest.raises(RuntimeError, match="inside another"):
            async with db.write() as outer:
                await outer.execute(text("INSERT INTO t (n) VALUES (1)"))
                async with db.write() as inner:
                    await inner.execute(text("INSERT INTO t (n) VALUES (2)"))

        async def other_task() -> None:
            async with db.write() as conn:
                await conn.execute(text("INSERT INTO t (n) VALUES (3)"))

        async with db.write() as conn:  # another task's write waits its turn: no error
            waiting = asyncio.create_task(other_task())
            await asyncio.sleep(0.05)
            assert not waiting.done()
            await conn.execute(text("INSERT INTO t (n) VALUES (4)"))
        await asyncio.wait_for(waiting, 10)
        async with db.read() as conn:
            assert [n for (n,) in await conn.execute(text("SELECT n FROM t ORDER BY n"))] == [3, 4]
    finally:
        await db.dispose()
