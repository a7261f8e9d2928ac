"""Database preflight against the real PostgreSQL, MariaDB and SQLite of this machine.

PostgreSQL here uses trust authentication on 127.0.0.1 (any password is accepted for an
existing role), so a wrong password is tested on MariaDB; on PostgreSQL the authentication
failure case is a role that does not exist.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pymysql
import pytest

from flipt_operator.clients import sql
from flipt_operator.clients.sql import preflight, preflight_async
from flipt_operator.rules.migrations import SchemaState, assess_schema

pytestmark = pytest.mark.integration

PG = "127.0.0.1:5432"
MY_HOST, MY_PORT = "127.0.0.1", 3306
IMAGE = "docker.flipt.io/flipt/flipt:v1.61.1"
PASSWORD = "Sup3r-s3cret/p@ss"  # has characters that need percent-encoding in a URL
ENCODED = "Sup3r-s3cret%2Fp%40ss"


def _name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _assert_no_secret(check: sql.DatabaseCheck) -> None:
    for text in (check.message, repr(check)):
        assert PASSWORD not in text and ENCODED not in text and "p@ss" not in text


# --- PostgreSQL ---------------------------------------------------------------------------------


def _pg_admin() -> psycopg.Connection:
    return psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True)


@pytest.fixture
def pg_db() -> Iterator[str]:
    name = _name("flipt_it")
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield name
    with _pg_admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pg_exec(db: str, *statements: str) -> None:
    with psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={db}", autocommit=True) as conn:
        for s in statements:
            conn.execute(s)


# golang-migrate's pgx driver table
PG_TABLE = "CREATE TABLE schema_migrations (version bigint not null primary key, dirty boolean not null)"


def test_pg_fresh_database_has_no_version_and_is_not_written(pg_db: str) -> None:
    check = preflight(f"postgres://postgres@{PG}/{pg_db}?sslmode=disable")
    assert check.ok and check.reason == "Reachable"
    assert (check.dialect, check.database, check.database_exists) == ("postgres", pg_db, True)
    assert check.schema_version is None and check.has_migrations_table is False
    assert assess_schema(check.dialect, check.schema_version, check.dirty, IMAGE).state is SchemaState.FRESH
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={pg_db}") as conn:
        count = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert count == (0,)  # preflight created nothing


def test_pg_empty_migrations_table_is_fresh(pg_db: str) -> None:
    _pg_exec(pg_db, PG_TABLE)
    check = preflight(f"postgresql://postgres@{PG}/{pg_db}")
    assert check.ok and check.has_migrations_table is True and check.schema_version is None


def test_pg_pending_schema(pg_db: str) -> None:
    _pg_exec(pg_db, PG_TABLE, "INSERT INTO schema_migrations VALUES (15, false)")
    check = preflight(f"postgres://postgres@{PG}/{pg_db}")
    assert (check.schema_version, check.dirty) == (15, False)
    result = assess_schema("postgres", check.schema_version, check.dirty, IMAGE)
    assert result.state is SchemaState.PENDING and result.expected == 16


def test_pg_dirty_schema(pg_db: str) -> None:
    _pg_exec(pg_db, PG_TABLE, "INSERT INTO schema_migrations VALUES (9, true)")
    check = preflight(f"postgres://postgres@{PG}/{pg_db}")
    assert (check.schema_version, check.dirty) == (9, True)
    result = assess_schema("postgres", check.schema_version, check.dirty, IMAGE)
    assert result.state is SchemaState.DIRTY
    assert "version = 8" in (result.repair or "")


def test_pg_search_path_option_is_honoured(pg_db: str) -> None:
    # golang-migrate keeps its table in current_schema(): the URL's search_path must be applied.
    _pg_exec(pg_db, "CREATE SCHEMA flipt", PG_TABLE.replace("schema_migrations", "flipt.schema_migrations"),
             "INSERT INTO flipt.schema_migrations VALUES (16, false)")
    assert preflight(f"postgres://postgres@{PG}/{pg_db}").schema_version is None
    assert preflight(f"postgres://postgres@{PG}/{pg_db}?search_path=flipt").schema_version == 16


def test_pg_missing_database() -> None:
    check = preflight(f"postgres://postgres:{ENCODED}@{PG}/{_name('missing')}")
    assert check.reason == "DatabaseNotFound"
    assert check.reachable and check.database_exists is False
    _assert_no_secret(check)


def test_pg_unknown_role_is_an_authentication_failure() -> None:
    check = preflight(f"postgres://{_name('nobody')}:{ENCODED}@{PG}/postgres")
    assert check.reason == "AuthenticationFailed" and not check.ok
    _assert_no_secret(check)


def test_pg_unreachable_is_fast() -> None:
    started = time.monotonic()
    check = preflight(f"postgres://postgres:{ENCODED}@127.0.0.1:{_free_port()}/flipt", timeout=2)
    assert check.reason == "Unreachable" and not check.reachable
    assert time.monotonic() - started < 5
    _assert_no_secret(check)


def test_pg_silent_server_times_out() -> None:
    # A socket that accepts connections but never answers: libpq's connect_timeout ends it.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        started = time.monotonic()
        check = preflight(f"postgres://postgres@127.0.0.1:{port}/flipt", timeout=2)
    assert check.reason == "Unreachable"
    assert time.monotonic() - started < 6


async def test_async_wrapper(pg_db: str) -> None:
    check = await preflight_async(f"postgres://postgres@{PG}/{pg_db}")
    assert check.ok and check.schema_version is None


async def test_async_wrapper_hard_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    def stuck(url: str, timeout: float) -> sql.DatabaseCheck:
        time.sleep(3)
        raise AssertionError("abandoned")

    monkeypatch.setattr(sql, "preflight", stuck)
    started = time.monotonic()
    check = await preflight_async(f"postgres://u:{ENCODED}@db/flipt", timeout=0.2)
    assert check.reason == "Timeout" and check.dialect == "postgres"
    assert time.monotonic() - started < 2.5
    _assert_no_secret(check)
    await asyncio.sleep(0)


def test_invalid_url() -> None:
    check = preflight(f"postgres://u:{ENCODED}@db:port/flipt")
    assert check.reason == "InvalidURL"
    _assert_no_secret(check)


# --- MariaDB ------------------------------------------------------------------------------------


def _my_admin() -> pymysql.Connection:
    return pymysql.connect(host=MY_HOST, port=MY_PORT, user="root", autocommit=True)


@pytest.fixture
def my_db() -> Iterator[tuple[str, str]]:
    """A database and a user (with PASSWORD) that owns it."""
    db, user = _name("flipt_it"), _name("fu")[:30]
    with _my_admin() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{db}`")
        cur.execute(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", (PASSWORD,))
        cur.execute(f"GRANT ALL PRIVILEGES ON `{db}`.* TO '{user}'@'%'")
    yield db, user
    with _my_admin() as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
        cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")


def _my_exec(db: str, *statements: str) -> None:
    with pymysql.connect(host=MY_HOST, port=MY_PORT, user="root", database=db, autocommit=True) as conn:
        with conn.cursor() as cur:
            for s in statements:
                cur.execute(s)


MY_TABLE = "CREATE TABLE schema_migrations (version bigint not null primary key, dirty boolean not null)"


def test_mysql_fresh_with_password_user(my_db: tuple[str, str]) -> None:
    db, user = my_db
    check = preflight(f"mysql://{user}:{ENCODED}@{MY_HOST}:{MY_PORT}/{db}?multiStatements=true&parseTime=true")
    assert check.ok and check.dialect == "mysql" and check.schema_version is None
    _assert_no_secret(check)


def test_mysql_pending_and_dirty(my_db: tuple[str, str]) -> None:
    db, user = my_db
    url = f"mysql://{user}:{ENCODED}@{MY_HOST}:{MY_PORT}/{db}"
    _my_exec(db, MY_TABLE, "INSERT INTO schema_migrations VALUES (12, false)")
    check = preflight(url)
    assert (check.schema_version, check.dirty) == (12, False)
    assert assess_schema("mysql", 12, False, IMAGE).state is SchemaState.PENDING
    _my_exec(db, "UPDATE schema_migrations SET version = 15, dirty = true")
    check = preflight(url)
    assert (check.schema_version, check.dirty) == (15, True)
    assert assess_schema("mysql", check.schema_version, check.dirty, IMAGE).state is SchemaState.DIRTY


def test_mysql_wrong_password_is_scrubbed(my_db: tuple[str, str]) -> None:
    db, user = my_db
    wrong = "Wr0ng-" + PASSWORD
    check = preflight(f"mysql://{user}:{wrong.replace('/', '%2F').replace('@', '%40')}@{MY_HOST}:{MY_PORT}/{db}")
    assert check.reason == "AuthenticationFailed" and not check.ok
    assert wrong not in check.message and "Wr0ng" not in check.message
    _assert_no_secret(check)


def test_mysql_missing_database() -> None:
    check = preflight(f"mysql://root@{MY_HOST}:{MY_PORT}/{_name('missing')}")
    assert check.reason == "DatabaseNotFound" and check.database_exists is False and check.reachable


def test_mysql_unreachable() -> None:
    check = preflight(f"mysql://root:{ENCODED}@127.0.0.1:{_free_port()}/flipt", timeout=2)
    assert check.reason == "Unreachable"
    _assert_no_secret(check)


# --- SQLite -------------------------------------------------------------------------------------

# golang-migrate's sqlite3 driver table
SQLITE_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version uint64, dirty bool);"
    "CREATE UNIQUE INDEX IF NOT EXISTS version_unique ON schema_migrations (version);"
)


def test_sqlite_missing_file_is_not_created(tmp_path: Path) -> None:
    db = tmp_path / "flipt.db"
    check = preflight(f"file:{db}?_fk=true&cache=shared&mode=rwc")
    assert check.reason == "DatabaseNotFound" and check.database_exists is False
    assert not db.exists()


def test_sqlite_fresh_pending_dirty(tmp_path: Path) -> None:
    db = tmp_path / "flipt.db"
    sqlite3.connect(db).close()
    check = preflight(f"file:{db}")
    assert check.ok and check.schema_version is None and check.has_migrations_table is False

    with sqlite3.connect(db) as conn:
        conn.executescript(SQLITE_TABLE + "INSERT INTO schema_migrations VALUES (14, 0);")
    before = db.read_bytes()
    check = preflight(f"sqlite:{db}")
    assert (check.schema_version, check.dirty) == (14, False)
    assert assess_schema("sqlite", 14, False, IMAGE).state is SchemaState.PENDING
    assert db.read_bytes() == before  # opened read-only

    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE schema_migrations SET dirty = 1")
    assert preflight(f"file://{db}").dirty is True


def test_sqlite_not_a_database(tmp_path: Path) -> None:
    db = tmp_path / "flipt.db"
    db.write_text("this is not sqlite" * 100)
    check = preflight(f"file:{db}")
    assert check.reason == "QueryFailed" and not check.ok


def test_cockroach_code_path_over_the_postgres_wire(pg_db: str) -> None:
    # No CockroachDB here: its dialect (sqlalchemy-cockroachdb on psycopg) speaks to PostgreSQL
    # well enough to exercise the cockroachdb branch (database existence via pg_database).
    _pg_exec(pg_db, PG_TABLE, "INSERT INTO schema_migrations VALUES (12, false)")
    check = preflight(f"cockroach://postgres@{PG}/{pg_db}?sslmode=disable")
    assert check.ok and check.dialect == "cockroachdb" and check.schema_version == 12
    assert assess_schema("cockroachdb", 12, False, IMAGE).state is SchemaState.PENDING


# --- bounds: a connection that never answers, a statement that never ends ----------------------


def _held_lock_pg(db: str) -> psycopg.Connection:
    """A connection holding an exclusive lock on schema_migrations: reads of it wait."""
    _pg_exec(db, PG_TABLE, "INSERT INTO schema_migrations VALUES (16, false)")
    holder = psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={db}")
    holder.execute("LOCK TABLE schema_migrations IN ACCESS EXCLUSIVE MODE")
    return holder


@pytest.mark.parametrize("scheme", ["postgres", "cockroach"])
def test_pg_statement_that_waits_ends_at_the_statement_timeout(pg_db: str, scheme: str) -> None:
    holder = _held_lock_pg(pg_db)
    try:
        started = time.monotonic()
        check = preflight(f"{scheme}://postgres@{PG}/{pg_db}?sslmode=disable", timeout=1)
        elapsed = time.monotonic() - started
    finally:
        holder.close()
    assert check.reason == "Timeout", check
    assert elapsed < 4


def test_mysql_silent_server_times_out() -> None:
    from tests.support.silent_peers import silent_listener

    with silent_listener() as port:
        started = time.monotonic()
        check = preflight(f"mysql://root:{ENCODED}@127.0.0.1:{port}/flipt", timeout=1)
        elapsed = time.monotonic() - started
    assert check.reason in ("Unreachable", "Timeout") and not check.ok, check
    assert elapsed < 3
    _assert_no_secret(check)


def test_mysql_statement_that_waits_ends_at_the_read_timeout(my_db: tuple[str, str]) -> None:
    db, _ = my_db
    _my_exec(db, MY_TABLE, "INSERT INTO schema_migrations VALUES (15, false)")
    holder = pymysql.connect(host=MY_HOST, port=MY_PORT, user="root", database=db, autocommit=True)
    try:
        with holder.cursor() as cur:
            cur.execute("LOCK TABLES schema_migrations WRITE")
        started = time.monotonic()
        check = preflight(f"mysql://root@{MY_HOST}:{MY_PORT}/{db}", timeout=1)
        elapsed = time.monotonic() - started
    finally:
        holder.close()
    assert check.reason == "Timeout", check
    assert elapsed < 4
