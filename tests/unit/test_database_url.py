"""Flipt database URLs -> SQLAlchemy parameters, and secret scrubbing."""

from __future__ import annotations

import pytest

from flipt_operator.rules.database_url import (
    DatabaseURLError,
    UnsupportedDatabaseURL,
    parse_flipt_url,
    scrub,
    url_password,
)

SECRET = "s3cr3t/p@ss:word"
ENCODED = "s3cr3t%2Fp%40ss%3Aword"


@pytest.mark.parametrize(
    ("url", "dialect", "sa_url", "database"),
    [
        ("file:/var/opt/flipt/flipt.db", "sqlite", "sqlite:////var/opt/flipt/flipt.db", "/var/opt/flipt/flipt.db"),
        ("file:flipt.db", "sqlite", "sqlite:///flipt.db", "flipt.db"),
        ("file:///var/opt/flipt/flipt.db?_fk=true", "sqlite", "sqlite:////var/opt/flipt/flipt.db", "/var/opt/flipt/flipt.db"),
        ("sqlite:/data/x.db", "sqlite", "sqlite:////data/x.db", "/data/x.db"),
        ("postgres://flipt@db:5432/flipt?sslmode=disable", "postgres",
         "postgresql+psycopg://flipt@db:5432/flipt?sslmode=disable", "flipt"),
        ("postgresql://flipt@db/flipt", "postgres", "postgresql+psycopg://flipt@db/flipt", "flipt"),
        ("cockroach://root@crdb:26257/flipt?sslmode=disable", "cockroachdb",
         "cockroachdb+psycopg://root@crdb:26257/flipt?sslmode=disable", "flipt"),
        ("cockroachdb://root@crdb/flipt", "cockroachdb", "cockroachdb+psycopg://root@crdb:26257/flipt", "flipt"),
        ("mysql://flipt@mysql:3306/flipt", "mysql", "mysql+pymysql://flipt@mysql:3306/flipt", "flipt"),
    ],
)
def test_url_forms(url: str, dialect: str, sa_url: str, database: str) -> None:
    parsed = parse_flipt_url(url)
    assert parsed.dialect == dialect
    assert parsed.sqlalchemy_url == sa_url
    assert parsed.database == database


def test_password_is_kept_for_the_driver_but_hidden() -> None:
    parsed = parse_flipt_url(f"postgres://flipt:{ENCODED}@db:5432/flipt")
    assert parsed.password == SECRET
    assert ENCODED in parsed.sqlalchemy_url
    assert SECRET not in repr(parsed) and ENCODED not in repr(parsed)
    assert parsed.redacted == "postgresql+psycopg://flipt:***@db:5432/flipt"


def test_flipt_only_options_are_dropped_and_useful_ones_kept() -> None:
    parsed = parse_flipt_url(
        "postgres://u@db/flipt?sslmode=verify-full&default_query_exec_mode=simple_protocol"
        "&search_path=flipt&pool_max_conns=4&application_name=x"
    )
    assert parsed.query == {"sslmode": "verify-full", "application_name": "x", "options": "-c search_path=flipt"}
    assert set(parsed.dropped_options) == {"default_query_exec_mode", "pool_max_conns"}

    my = parse_flipt_url("mysql://u@db/flipt?multiStatements=true&parseTime=true&tls=true&charset=utf8mb4")
    assert my.query == {"charset": "utf8mb4"}
    assert my.tls == "verify"
    assert parse_flipt_url("mysql://u@db/flipt?tls=skip-verify").tls == "require"

    lite = parse_flipt_url("file:/x/flipt.db?_fk=true&cache=shared&mode=rwc")
    assert lite.sqlalchemy_url == "sqlite:////x/flipt.db"
    assert set(lite.dropped_options) == {"_fk", "cache", "mode"}


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("", DatabaseURLError),
        ("flipt.db", DatabaseURLError),
        ("redis://h:6379", UnsupportedDatabaseURL),
        ("libsql://file:/x.db", UnsupportedDatabaseURL),
        ("file:", DatabaseURLError),
        ("file://otherhost/x.db", DatabaseURLError),
        (f"postgres://u:{SECRET}@db:notaport/flipt", DatabaseURLError),
        (f"postgres://u:{ENCODED}@/flipt", DatabaseURLError),
        (f"mysql://u:{ENCODED}@db/flipt?tls=custom", DatabaseURLError),
        (f"postgres:u:{ENCODED}@db/flipt", DatabaseURLError),
    ],
)
def test_invalid_urls_raise_without_the_password(url: str, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        parse_flipt_url(url)
    text = str(info.value)
    assert SECRET not in text and ENCODED not in text and "p@ss" not in text


def test_scrub_removes_given_secrets_and_any_userinfo_password() -> None:
    msg = (
        f'connection to "postgres://flipt:{ENCODED}@db/flipt" failed; password={SECRET} '
        f"raw {SECRET} and mysql://root:other@h/x"
    )
    out = scrub(msg, [SECRET, None, ""])
    assert SECRET not in out and ENCODED not in out and "other" not in out
    assert "postgres://flipt:***@" in out and "mysql://root:***@h/x" in out


def test_url_password() -> None:
    assert url_password(f"postgres://u:{ENCODED}@db/x") == SECRET
    assert url_password("postgres://u@db/x") is None
    assert url_password("file:/x.db") is None


def test_scrub_masks_key_value_forms_but_keeps_driver_wording() -> None:
    assert scrub("host=db password=hunter2 user=x") == "host=db password=*** user=x"
    assert scrub("{'user': 'x', 'password': 'hunter2'}") == "{'user': 'x', 'password': '***'}"
    text = "(1045, \"Access denied for user 'root'@'127.0.0.1' (using password: YES)\")"
    assert scrub(text) == text
