"""Expected schema versions and what a golang-migrate state means for a Flipt image."""

from __future__ import annotations

import pytest

from flipt_operator.rules.migrations import (
    SchemaState,
    assess_schema,
    create_database_command,
    dirty_repair,
    expected_version,
    flipt_creates_missing_database,
    image_tag,
)

IMAGE = "docker.flipt.io/flipt/flipt:v1.61.1"


@pytest.mark.parametrize(
    ("image", "tag"),
    [
        (IMAGE, "v1.61.1"),
        ("flipt/flipt:1.61.1", "v1.61.1"),
        ("registry:5000/flipt/flipt:v1.61.1@sha256:abc", "v1.61.1"),
        ("registry:5000/flipt/flipt", None),
        ("flipt/flipt:latest", "latest"),
    ],
)
def test_image_tag(image: str, tag: str | None) -> None:
    assert image_tag(image) == tag


def test_expected_versions_for_v1_61_1() -> None:
    assert {d: expected_version(d, IMAGE) for d in ("sqlite", "postgres", "mysql", "cockroachdb")} == {
        "sqlite": 15,
        "postgres": 16,
        "mysql": 15,
        "cockroachdb": 13,
    }
    assert expected_version("postgres", "flipt/flipt:v1.60.0") is None
    assert expected_version("postgres", "flipt/flipt:latest") is None


@pytest.mark.parametrize(
    ("dialect", "version", "dirty", "image", "state", "reason"),
    [
        ("postgres", None, False, IMAGE, SchemaState.FRESH, "DatabaseFresh"),
        ("postgres", 15, False, IMAGE, SchemaState.PENDING, "MigrationsPending"),
        ("postgres", 16, False, IMAGE, SchemaState.UP_TO_DATE, "MigrationsApplied"),
        ("postgres", 17, False, IMAGE, SchemaState.UP_TO_DATE, "MigrationsApplied"),
        ("sqlite", 14, None, IMAGE, SchemaState.PENDING, "MigrationsPending"),
        ("mysql", 15, False, IMAGE, SchemaState.UP_TO_DATE, "MigrationsApplied"),
        ("cockroachdb", 12, False, IMAGE, SchemaState.PENDING, "MigrationsPending"),
        ("mysql", 9, True, IMAGE, SchemaState.DIRTY, "SchemaDirty"),
        ("mysql", 9, False, "flipt/flipt:v1.70.0", SchemaState.UNKNOWN, "ExpectedVersionUnknown"),
        ("mysql", None, False, "flipt/flipt:v1.70.0", SchemaState.FRESH, "DatabaseFresh"),
    ],
)
def test_assess_schema(dialect, version, dirty, image, state, reason) -> None:
    result = assess_schema(dialect, version, dirty, image)
    assert result.state is state
    assert result.reason == reason
    assert result.needs_migration is (state is SchemaState.PENDING)
    assert (result.repair is not None) is (state is SchemaState.DIRTY)


def test_server_can_start_mirrors_flipt() -> None:
    assert assess_schema("postgres", None, False, IMAGE).server_can_start
    assert not assess_schema("postgres", 3, False, IMAGE).server_can_start
    # Flipt ignores dirty: a dirty row at the expected version still starts.
    assert assess_schema("postgres", 16, True, IMAGE).server_can_start
    assert not assess_schema("postgres", 10, True, IMAGE).server_can_start


def test_dirty_repair_sql() -> None:
    text = dirty_repair("postgres", 7)
    assert "UPDATE schema_migrations SET dirty = false, version = 7;" in text
    assert "UPDATE schema_migrations SET dirty = false, version = 6;" in text
    assert "DELETE FROM schema_migrations;" in dirty_repair("sqlite", 0)


def test_create_database_command() -> None:
    assert create_database_command("postgres", "flipt") == 'CREATE DATABASE "flipt";'
    assert create_database_command("postgres", 'we"ird', owner="app") == 'CREATE DATABASE "we""ird" OWNER "app";'
    assert create_database_command("mysql", "flipt").startswith("CREATE DATABASE IF NOT EXISTS `flipt`")
    assert "GRANT ALL PRIVILEGES ON `flipt`.* TO 'app'@'%'" in create_database_command("mysql", "flipt", "app")
    assert create_database_command("cockroachdb", "flipt") == 'CREATE DATABASE IF NOT EXISTS "flipt";'
    assert create_database_command("sqlite", "/var/opt/flipt/flipt.db") is None
    assert flipt_creates_missing_database("sqlite") and not flipt_creates_missing_database("postgres")
