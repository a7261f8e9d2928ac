"""Read-only health check of a Flipt database: reachable, exists, golang-migrate schema version.

The operator never writes to Flipt's database: it connects, reads `schema_migrations(version,
dirty)` when the table exists, and disconnects. SQLite files are opened read-only (`mode=ro`),
so a missing file is reported, never created. Every message is scrubbed of the password.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection
from sqlalchemy.pool import NullPool

from ..rules.database_url import DatabaseURL, DatabaseURLError, parse_flipt_url, scrub, url_password
from ..rules.migrations import MIGRATIONS_TABLE

Reason = Literal[
    "Reachable",
    "DatabaseNotFound",
    "AuthenticationFailed",
    "PermissionDenied",
    "Unreachable",
    "Timeout",
    "InvalidURL",
    "QueryFailed",
]


@dataclass(frozen=True)
class DatabaseCheck:
    """What the operator learned about a Flipt database. `message` holds no secret."""

    reason: Reason
    message: str
    dialect: str | None = None
    database: str | None = None
    reachable: bool = False
    database_exists: bool | None = None
    has_migrations_table: bool | None = None
    schema_version: int | None = None
    dirty: bool | None = None

    @property
    def ok(self) -> bool:
        """Connected and read the schema state (version None: a fresh database)."""
        return self.reason == "Reachable"


def preflight(url: str, timeout: float = 5.0) -> DatabaseCheck:
    """Connect to the database Flipt's `url` names and read its schema state. Blocking.

    `timeout` bounds the connection attempt and each statement (seconds).
    """
    secrets = [url_password(url)]
    try:
        parsed = parse_flipt_url(url)
    except DatabaseURLError as exc:
        return DatabaseCheck(reason="InvalidURL", message=scrub(str(exc), secrets))
    secrets.append(parsed.password)
    try:
        if parsed.is_sqlite:
            return _preflight_sqlite(parsed, timeout)
        return _preflight_server(parsed, timeout)
    except Exception as exc:  # noqa: BLE001 - any driver failure becomes a reported reason
        reason, text = _classify(parsed, exc)
        return DatabaseCheck(
            reason=reason,
            message=scrub(text, secrets),
            dialect=parsed.dialect,
            database=parsed.database,
            reachable=reason in ("DatabaseNotFound", "PermissionDenied", "QueryFailed"),
            database_exists=False if reason == "DatabaseNotFound" else None,
        )


async def preflight_async(url: str, timeout: float = 5.0) -> DatabaseCheck:
    """`preflight` in a worker thread, with a hard deadline so the event loop is never held up.

    When the deadline passes the thread is abandoned (it ends on its own driver timeouts) and
    the check reports `Timeout`.
    """
    deadline = timeout * 2 + 1.0
    try:
        return await asyncio.wait_for(asyncio.to_thread(preflight, url, timeout), deadline)
    except TimeoutError:
        try:
            parsed: DatabaseURL | None = parse_flipt_url(url)
        except DatabaseURLError:
            parsed = None
        return DatabaseCheck(
            reason="Timeout",
            message=f"database check did not finish within {deadline:g}s",
            dialect=parsed.dialect if parsed else None,
            database=parsed.database if parsed else None,
        )


# --- SQLite ------------------------------------------------------------------------------------


def _preflight_sqlite(parsed: DatabaseURL, timeout: float) -> DatabaseCheck:
    path = parsed.database or ""
    if not os.path.isfile(path):
        return DatabaseCheck(
            reason="DatabaseNotFound",
            message=f"SQLite file {path} does not exist (Flipt creates it at first start)",
            dialect="sqlite",
            database=path,
            reachable=True,
            database_exists=False,
        )
    # A file: URI opened read-only; sqlite3 never creates or changes the file in mode=ro.
    uri = "file:" + quote(os.path.abspath(path)) + "?mode=ro"
    engine = sa.create_engine(
        "sqlite://",
        poolclass=NullPool,
        creator=lambda: __import__("sqlite3").connect(uri, uri=True, timeout=timeout, check_same_thread=False),
    )
    return _read_schema(engine, parsed)


# --- PostgreSQL, CockroachDB, MySQL -------------------------------------------------------------


def _connect_args(parsed: DatabaseURL, timeout: float) -> dict[str, Any]:
    seconds = max(1, int(round(timeout)))
    if parsed.dialect in ("postgres", "cockroachdb"):
        # libpq's connect_timeout (minimum 2s); on PostgreSQL statement_timeout bounds the reads.
        args: dict[str, Any] = {"connect_timeout": max(2, seconds)}
        options = parsed.query.get("options", "")
        if parsed.dialect == "postgres":
            options = (options + f" -c statement_timeout={int(timeout * 1000)}").strip()
        if options:
            args["options"] = options
        return args
    args = {"connect_timeout": seconds, "read_timeout": seconds, "write_timeout": seconds}
    if parsed.tls in ("verify", "require"):
        ctx = ssl.create_default_context()
        if parsed.tls == "require":
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        args["ssl"] = ctx
    return args


def _preflight_server(parsed: DatabaseURL, timeout: float) -> DatabaseCheck:
    query = {k: v for k, v in parsed.query.items() if k != "options"}
    url = URL.create(
        parsed.drivername,
        username=parsed.username,
        password=parsed.password,
        host=parsed.host,
        port=parsed.port,
        database=parsed.database,
        query=query,
    )
    engine = sa.create_engine(url, poolclass=NullPool, connect_args=_connect_args(parsed, timeout))
    if parsed.dialect == "cockroachdb":
        # Bound the reads as on PostgreSQL; with SET rather than a startup option, which older
        # CockroachDB releases refuse.
        @sa.event.listens_for(engine, "connect")
        def _statement_timeout(dbapi_connection: Any, _: Any) -> None:
            with dbapi_connection.cursor() as cursor:
                cursor.execute(f"SET statement_timeout = '{int(timeout * 1000)}ms'")
            dbapi_connection.commit()

    return _read_schema(engine, parsed)


# --- shared ------------------------------------------------------------------------------------


def _read_schema(engine: sa.Engine, parsed: DatabaseURL) -> DatabaseCheck:
    try:
        with engine.connect() as conn:
            if parsed.dialect == "cockroachdb" and not _cockroach_database_exists(conn):
                # CockroachDB accepts a connection to a database that does not exist.
                return DatabaseCheck(
                    reason="DatabaseNotFound",
                    message=f"database {parsed.database!r} does not exist",
                    dialect=parsed.dialect,
                    database=parsed.database,
                    reachable=True,
                    database_exists=False,
                )
            has_table = sa.inspect(conn).has_table(MIGRATIONS_TABLE)
            version: int | None = None
            dirty: bool | None = None
            if has_table:
                # golang-migrate's own Version() query: one row, or none (no version yet).
                row = conn.execute(sa.text(f"SELECT version, dirty FROM {MIGRATIONS_TABLE} LIMIT 1")).first()
                if row is not None:
                    version, dirty = int(row[0]), bool(row[1])
            conn.rollback()
    finally:
        engine.dispose()
    if version is None:
        state = "no schema_migrations table" if not has_table else "schema_migrations is empty"
        message = f"connected; {state}: a fresh database that Flipt migrates at start"
    else:
        message = f"connected; schema version {version}" + (" (dirty)" if dirty else "")
    return DatabaseCheck(
        reason="Reachable",
        message=message,
        dialect=parsed.dialect,
        database=parsed.database,
        reachable=True,
        database_exists=True,
        has_migrations_table=has_table,
        schema_version=version,
        dirty=dirty,
    )


def _cockroach_database_exists(conn: Connection) -> bool:
    found = conn.execute(
        sa.text("SELECT count(*) FROM pg_catalog.pg_database WHERE datname = current_database()")
    ).scalar()
    return bool(found)


_AUTH_MARKERS = (
    "password authentication failed",
    "no password supplied",
    "authentication failed",
    "role \"",
    "pg_hba.conf",
    "sasl",
)
_UNREACHABLE_MARKERS = (
    "connection refused",
    "could not connect",
    "failed to resolve host",
    "could not translate host",
    "name or service not known",
    "timeout expired",
    "timed out",
    "no route to host",
    "network is unreachable",
    "server closed the connection",
    "ssl",
    "unable to open database file",
)


def _classify(parsed: DatabaseURL, exc: BaseException) -> tuple[Reason, str]:
    orig = getattr(exc, "orig", None) or exc
    text = " ".join(str(orig).split())
    low = text.lower()
    code = orig.args[0] if getattr(orig, "args", None) and isinstance(orig.args[0], int) else None
    if "statement timeout" in low or (code == 2013 and "timed out" in low):
        # PostgreSQL/CockroachDB's statement_timeout; MySQL's read timeout mid-query.
        return "Timeout", text
    if parsed.dialect == "mysql" and code is not None:
        if code == 1049:
            return "DatabaseNotFound", text
        if code in (1045, 1698, 1251, 2059):
            return "AuthenticationFailed", text
        if code == 1044:
            return "PermissionDenied", text + " (the database may also not exist)"
        if code in (2002, 2003, 2005, 2006, 2013, 2026):
            return "Unreachable", text
        if code == 1142 or code == 1143:
            return "PermissionDenied", text
        return "QueryFailed", text
    if "does not exist" in low and "database" in low and "role" not in low:
        return "DatabaseNotFound", text
    if any(m in low for m in _AUTH_MARKERS):
        return "AuthenticationFailed", text
    if "permission denied" in low or "insufficient privilege" in low:
        return "PermissionDenied", text
    if any(m in low for m in _UNREACHABLE_MARKERS) or isinstance(orig, (OSError, TimeoutError)):
        return "Unreachable", text
    if parsed.dialect == "sqlite":
        return "QueryFailed", text
    if isinstance(exc, sa.exc.OperationalError) and "connection" in low:
        return "Unreachable", text
    return "QueryFailed", text
