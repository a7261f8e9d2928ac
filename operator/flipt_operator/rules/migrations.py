"""Flipt's schema migrations (golang-migrate): expected versions and what a schema state means. Pure.

Flipt embeds up-only migrations per dialect and, at start, compares golang-migrate's
`schema_migrations.version` with a version hard-coded in the binary:

* no row (a fresh, empty database): Flipt migrates all the way up by itself;
* version < expected: Flipt refuses to start ("migrations pending … run `flipt migrate`");
* version >= expected: it starts (a database newer than the binary is accepted).

Flipt never looks at `dirty`; golang-migrate refuses to migrate a dirty database, so a dirty
row needs a person (see `dirty_repair`).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from enum import Enum

from .database_url import Dialect

# Per released image tag: the version `flipt migrate` brings each dialect to.
# Source: internal/storage/sql/migrator.go `expectedVersions` at the tag.
EXPECTED_VERSIONS: dict[str, dict[Dialect, int]] = {
    "v1.61.1": {"sqlite": 15, "postgres": 16, "mysql": 15, "cockroachdb": 13},
}

MIGRATIONS_TABLE = "schema_migrations"


def image_tag(image: str) -> str | None:
    """The tag of an image reference (`repo[:tag][@digest]`), normalised to start with `v`; None if absent."""
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last:
        return None
    tag = last.rsplit(":", 1)[1]
    if re.fullmatch(r"\d+\.\d+\.\d+.*", tag):
        tag = "v" + tag
    return tag or None


def expected_version(dialect: str, image: str) -> int | None:
    """The schema version the image's binary expects for `dialect`, or None when not known."""
    tag = image_tag(image)
    if tag is None:
        return None
    known: dict[str, int] = EXPECTED_VERSIONS.get(tag, {})  # type: ignore[assignment]
    return known.get(dialect)


class SchemaState(str, Enum):
    FRESH = "Fresh"
    UP_TO_DATE = "UpToDate"
    PENDING = "Pending"
    DIRTY = "Dirty"
    UNKNOWN = "Unknown"


@dataclass(frozen=True)
class SchemaAssessment:
    state: SchemaState
    reason: str
    """CamelCase reason for the MigrationsApplied condition."""
    message: str
    dialect: str
    version: int | None
    expected: int | None
    dirty: bool
    repair: str | None = None
    """For a dirty schema: the repair procedure and SQL (see `dirty_repair`)."""

    @property
    def needs_migration(self) -> bool:
        """True when a `flipt migrate` Job must run before this image can serve."""
        return self.state is SchemaState.PENDING

    @property
    def server_can_start(self) -> bool:
        """Whether Flipt itself would start on this schema (it ignores `dirty`)."""
        return self.state in (SchemaState.FRESH, SchemaState.UP_TO_DATE) or (
            self.state is SchemaState.DIRTY and self.expected is not None and (self.version or 0) >= self.expected
        )


def assess_schema(dialect: str, version: int | None, dirty: bool | None, image: str) -> SchemaAssessment:
    """Decide what the schema state means for the server `image`.

    `version` None means no `schema_migrations` row (or no table): a fresh database that Flipt
    migrates at start. When the image's expected version is not known, a non-fresh, clean
    schema is `Unknown` (running `flipt migrate` is then safe: it does nothing when up to date).
    """
    expected = expected_version(dialect, image)
    dirty = bool(dirty)
    # what every assessment carries; each branch adds its state, reason and message
    common = functools.partial(SchemaAssessment, dialect=dialect, version=version, expected=expected, dirty=dirty)
    if version is None:
        return common(
            state=SchemaState.FRESH,
            reason="DatabaseFresh",
            message="Empty database: Flipt creates the schema when it starts.",
        )
    if dirty:
        return common(
            state=SchemaState.DIRTY,
            reason="SchemaDirty",
            message=(
                f"Migration {version} failed half-way (schema_migrations.dirty=true); golang-migrate "
                "will not migrate until a person repairs it. See status repair hint / docs/database.md."
            ),
            repair=dirty_repair(dialect, version),
        )
    if expected is None:
        return common(
            state=SchemaState.UNKNOWN,
            reason="ExpectedVersionUnknown",
            message=(
                f"Schema version {version}; the version expected by {image} is not known to the operator, "
                "so `flipt migrate` (a no-op when nothing is pending) decides."
            ),
        )
    if version < expected:
        return common(
            state=SchemaState.PENDING,
            reason="MigrationsPending",
            message=f"Schema version {version}, {image} expects {expected}: `flipt migrate` must run.",
        )
    ahead = f" (newer than the {expected} {image} expects; Flipt accepts that)" if version > expected else ""
    return common(
        state=SchemaState.UP_TO_DATE,
        reason="MigrationsApplied",
        message=f"Schema version {version}{ahead}.",
    )


def dirty_repair(dialect: str, version: int) -> str:
    """How to repair a dirty golang-migrate row at `version`, with the SQL for `dialect`.

    golang-migrate writes (N, dirty=true) before running migration N and (N, false) after it.
    A dirty N therefore means migration N started and failed; its statements may be half applied.
    Either finish N by hand and mark it clean, or undo what N did and step back to N-1 so
    `flipt migrate` runs N again.
    """
    table = MIGRATIONS_TABLE
    finish = f"UPDATE {table} SET dirty = false, version = {version};"
    if version > 0:
        retry = f"UPDATE {table} SET dirty = false, version = {version - 1};"
    else:
        retry = f"DELETE FROM {table};"  # golang-migrate `force -1`: no version, Flipt migrates from scratch
    where = {
        "postgres": "in the schema Flipt uses (current_schema())",
        "cockroachdb": "in Flipt's database",
        "mysql": "in Flipt's database",
        "sqlite": "in the SQLite file (stop the server first)",
    }.get(dialect, "in Flipt's database")
    return (
        f"Back up the database. Look up migration {version} for {dialect} in Flipt's "
        f"config/migrations/ at the server's version and check which of its statements were applied, "
        f"{where}. Then either complete the rest of it by hand and run: {finish} "
        f"or undo its partial changes and run: {retry} (the next `flipt migrate` re-applies {version})."
    )


def flipt_creates_missing_database(dialect: str) -> bool:
    """SQLite: Flipt opens the file with mode=rwc and creates it. Server databases must exist first."""
    return dialect == "sqlite"


def _pg_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _mysql_ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def create_database_command(dialect: str, database: str, owner: str | None = None) -> str | None:
    """The SQL that creates Flipt's missing database, run as an administrator; None for SQLite."""
    if dialect == "postgres":
        owner_clause = f" OWNER {_pg_ident(owner)}" if owner else ""
        return f"CREATE DATABASE {_pg_ident(database)}{owner_clause};"
    if dialect == "cockroachdb":
        grant = f" GRANT ALL ON DATABASE {_pg_ident(database)} TO {_pg_ident(owner)};" if owner else ""
        return f"CREATE DATABASE IF NOT EXISTS {_pg_ident(database)};{grant}"
    if dialect == "mysql":
        grant = ""
        if owner:
            user = "'" + owner.replace("'", "''") + "'"
            grant = f" GRANT ALL PRIVILEGES ON {_mysql_ident(database)}.* TO {user}@'%';"
        return (
            f"CREATE DATABASE IF NOT EXISTS {_mysql_ident(database)} "
            f"CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;{grant}"
        )
    return None
