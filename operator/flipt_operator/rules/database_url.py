"""Flipt database URLs (xo/dburl forms) mapped to SQLAlchemy connection parameters. Pure: no I/O.

Flipt parses `db.url` with xo/dburl plus its own tweaks; this module accepts the same schemes and
turns them into the pieces a SQLAlchemy engine needs. Only query options that a Python driver
understands and that change how the connection behaves (TLS, timeouts, search path) are kept;
options that only Flipt's Go drivers read (`_fk`, `cache`, `multiStatements`, pgx pool knobs…)
are dropped.

Nothing here ever puts a password in an exception message or a repr.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlencode, urlsplit

Dialect = Literal["sqlite", "postgres", "mysql", "cockroachdb"]
TLSMode = Literal["disable", "require", "verify"]

# scheme -> dialect. The aliases are the ones dburl registers and Flipt therefore accepts.
_SCHEMES: dict[str, Dialect] = {
    "file": "sqlite",
    "sqlite": "sqlite",
    "sqlite3": "sqlite",
    "postgres": "postgres",
    "postgresql": "postgres",
    "pgx": "postgres",
    "pg": "postgres",
    "cockroach": "cockroachdb",
    "cockroachdb": "cockroachdb",
    "crdb": "cockroachdb",
    "cdb": "cockroachdb",
    "cr": "cockroachdb",
    "mysql": "mysql",
    "mariadb": "mysql",
    "maria": "mysql",
    "my": "mysql",
}
_UNSUPPORTED = {
    "libsql": "libSQL URLs are not supported by the operator's preflight",
    "http": "remote libSQL (Turso) URLs are not supported by the operator's preflight",
    "https": "remote libSQL (Turso) URLs are not supported by the operator's preflight",
}

DRIVERS: dict[Dialect, str] = {
    "sqlite": "sqlite",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "cockroachdb": "cockroachdb+psycopg",
}
DEFAULT_PORTS: dict[Dialect, int | None] = {"sqlite": None, "postgres": 5432, "mysql": 3306, "cockroachdb": 26257}

# libpq connection parameters worth keeping (psycopg passes them to libpq unchanged).
_LIBPQ_KEEP = frozenset(
    {
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "sslcrl",
        "sslpassword",
        "sslnegotiation",
        "sslsni",
        "requiressl",
        "connect_timeout",
        "application_name",
        "options",
        "target_session_attrs",
        "host",
        "hostaddr",
        "port",
        "passfile",
        "channel_binding",
        "gssencmode",
        "krbsrvname",
    }
)
# Runtime parameters pgx sends as `SET`: psycopg needs them in `options`.
_PG_RUNTIME_PARAMS = frozenset({"search_path"})
# MySQL: Go driver's `tls` selects TLS; `charset` keeps its meaning for PyMySQL.
_MYSQL_KEEP = frozenset({"charset"})


class DatabaseURLError(ValueError):
    """The URL cannot be used. The message names the problem but never contains the password."""


class UnsupportedDatabaseURL(DatabaseURLError):
    """A well-formed URL whose scheme Flipt or the operator does not support."""


@dataclass(frozen=True)
class DatabaseURL:
    """A Flipt database URL split into what SQLAlchemy needs. `repr` hides the password."""

    dialect: Dialect
    drivername: str
    database: str | None
    """Database name; for SQLite the file path as Flipt would open it (relative paths stay relative)."""
    host: str | None = None
    port: int | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    query: dict[str, str] = field(default_factory=dict)
    tls: TLSMode | None = None
    """MySQL only: the TLS mode from the Go driver's `tls=` option (PyMySQL takes it as connect args)."""
    dropped_options: tuple[str, ...] = ()
    """Query option names that only Flipt's drivers read, left out of the SQLAlchemy URL."""

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def sqlalchemy_url(self) -> str:
        """The SQLAlchemy URL as a string (contains the password: never log it; use `redacted`)."""
        return self._render(self.password)

    @property
    def redacted(self) -> str:
        """The SQLAlchemy URL with the password replaced by ***: safe for messages."""
        return self._render("***" if self.password else None)

    def _render(self, password: str | None) -> str:
        if self.dialect == "sqlite":
            return f"sqlite:///{self.database or ''}"
        auth = ""
        if self.username is not None:
            auth = quote(self.username, safe="")
            if password is not None:
                auth += ":" + (password if password == "***" else quote(password, safe=""))
            auth += "@"
        host = self.host or ""
        if host and ":" in host:  # IPv6 literal
            host = f"[{host}]"
        port = f":{self.port}" if self.port else ""
        db = "/" + quote(self.database, safe="") if self.database else ""
        qs = "?" + urlencode(self.query) if self.query else ""
        return f"{self.drivername}://{auth}{host}{port}{db}{qs}"


def _scheme(url: str) -> str:
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):", url)
    if not m:
        raise DatabaseURLError("database URL has no scheme (expected file:, postgres://, mysql://, cockroach://)")
    return m.group(1).lower()


def parse_flipt_url(url: str) -> DatabaseURL:
    """Map a Flipt `db.url` to SQLAlchemy connection parameters.

    Raises UnsupportedDatabaseURL for schemes Flipt accepts but the operator cannot check
    (libSQL) or that are not database URLs, and DatabaseURLError for malformed URLs.
    """
    if not isinstance(url, str) or not url.strip():
        raise DatabaseURLError("database URL is empty")
    url = url.strip()
    if any(c.isspace() for c in url):
        raise DatabaseURLError("database URL contains whitespace")
    scheme = _scheme(url)
    # dburl accepts "scheme+transport" forms (e.g. postgres+unix); only the plain forms are kept.
    if scheme in _UNSUPPORTED:
        raise UnsupportedDatabaseURL(f"{scheme}: {_UNSUPPORTED[scheme]}")
    dialect = _SCHEMES.get(scheme)
    if dialect is None:
        raise UnsupportedDatabaseURL(
            f"unsupported database URL scheme {scheme!r}: use file:, postgres://, mysql:// or cockroach://"
        )
    if dialect == "sqlite":
        return _parse_sqlite(url, scheme)
    return _parse_server(url, scheme, dialect)


def _parse_sqlite(url: str, scheme: str) -> DatabaseURL:
    rest = url[len(scheme) + 1 :]
    rest, _, query = rest.partition("?")
    if rest.startswith("//"):
        # file://host/path: only an empty host or localhost names a local file.
        authority, slash, path = rest[2:].partition("/")
        if authority not in ("", "localhost"):
            raise DatabaseURLError(f"{scheme}: URL names a host; SQLite URLs look like file:/var/opt/flipt/flipt.db")
        rest = slash + path
    path = unquote(rest)
    if not path or path in ("/",):
        raise DatabaseURLError(f"{scheme}: URL has no file path (e.g. file:/var/opt/flipt/flipt.db)")
    if path == ":memory:":
        raise UnsupportedDatabaseURL("in-memory SQLite databases cannot be checked or migrated")
    dropped = tuple(k for k, _ in parse_qsl(query, keep_blank_values=True))
    return DatabaseURL(
        dialect="sqlite", drivername=DRIVERS["sqlite"], database=path, dropped_options=dropped
    )


def _parse_server(url: str, scheme: str, dialect: Dialect) -> DatabaseURL:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        # urllib's messages can quote the netloc (with the password): keep only a generic reason.
        reason = "invalid port" if "port" in str(exc).lower() else "malformed host part"
        raise DatabaseURLError(f"{scheme}: URL cannot be parsed ({reason})") from None
    if not url[len(scheme) + 1 :].startswith("//"):
        raise DatabaseURLError(f"{scheme}: URL must look like {scheme}://user@host:port/database")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if password == "":
        password = None
    host = parts.hostname or None
    database = unquote(parts.path.lstrip("/")) or None
    if database and "/" in database:
        raise DatabaseURLError(f"{scheme}: URL path must be a single database name")
    raw_query = parse_qsl(parts.query, keep_blank_values=True)

    query: dict[str, str] = {}
    dropped: list[str] = []
    tls: TLSMode | None = None
    if dialect in ("postgres", "cockroachdb"):
        options: list[str] = []
        for key, value in raw_query:
            if key in _PG_RUNTIME_PARAMS:
                options.append(f"-c {key}={value}")
            elif key in _LIBPQ_KEEP:
                if key == "options":
                    options.insert(0, value)
                elif key == "host" and not host:
                    host = value  # unix socket directory or host given as a query option
                else:
                    query[key] = value
            else:
                dropped.append(key)
        if options:
            query["options"] = " ".join(options)
    else:  # mysql
        for key, value in raw_query:
            if key == "tls":
                tls = _mysql_tls(value)
            elif key in _MYSQL_KEEP:
                query[key] = value
            else:
                dropped.append(key)
    if not host:
        raise DatabaseURLError(f"{scheme}: URL has no host")
    if dialect == "cockroachdb" and port is None:
        port = DEFAULT_PORTS["cockroachdb"]
    return DatabaseURL(
        dialect=dialect,
        drivername=DRIVERS[dialect],
        database=database,
        host=host,
        port=port,
        username=username,
        password=password,
        query=query,
        tls=tls,
        dropped_options=tuple(dropped),
    )


def _mysql_tls(value: str) -> TLSMode | None:
    v = value.lower()
    if v in ("true", "1"):
        return "verify"
    if v in ("skip-verify", "preferred"):
        return "require"
    if v in ("false", "0", ""):
        return "disable"
    # tls=<name> refers to a TLS config registered in Go code; Flipt registers none.
    raise DatabaseURLError(f"mysql: unsupported tls option {value!r} (use true, skip-verify, preferred or false)")


def url_password(url: str) -> str | None:
    """The password in any URL's userinfo (decoded), or None. For building scrub lists."""
    m = re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)@", url or "")
    if not m:
        return None
    userinfo = m.group(1)
    if ":" not in userinfo:
        return None
    return unquote(userinfo.split(":", 1)[1]) or None


_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)([^\s:/@]*):(\S*)@")
# password=… (DSN form) and 'password': '…' (a dict repr); not "using password: YES" (MySQL).
_KEYVALUE = re.compile(r"(?i)\b(password|passwd|pwd)(\s*=\s*)('[^']*'|\"[^\"]*\"|[^\s,;)]+)")
_QUOTED = re.compile(r"(?i)(['\"](?:password|passwd|pwd)['\"]\s*:\s*)('[^']*'|\"[^\"]*\")")


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Remove secrets from `text` (a driver error, a URL, a log line).

    Replaces every given secret, in plain and percent-encoded forms, with ***; replaces the
    password part of any `scheme://user:password@` userinfo; and masks `password=…` pairs.
    """
    out = str(text)
    forms: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        forms.update({secret, quote(secret, safe=""), quote_plus(secret), quote(secret)})
    for form in sorted(forms, key=len, reverse=True):
        if form:
            out = out.replace(form, "***")
    out = _USERINFO.sub(lambda m: f"{m.group(1)}{m.group(2)}:***@", out)
    out = _KEYVALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}***", out)
    out = _QUOTED.sub(lambda m: f"{m.group(1)}'***'", out)
    return out
