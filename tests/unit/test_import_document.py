"""Validation of Flipt export/import streams, with line numbers."""

from __future__ import annotations

import textwrap

import pytest

from flipt_operator.rules.import_document import content_hash, flipt_version, validate_import

VALID = textwrap.dedent(
    """\
    version: "1.4"
    namespace:
      key: production
      name: Production
    flags:
      - key: new-checkout
        name: New checkout
        type: BOOLEAN_FLAG_TYPE
        enabled: false
        rollouts:
          - segment: { key: internal-users, value: true }
          - threshold: { percentage: 25, value: true }
      - key: color
        name: Color
        type: VARIANT_FLAG_TYPE
        enabled: true
        variants:
          - { key: blue, default: true }
          - { key: green }
        rules:
          - segment: internal-users
            distributions: [ { variant: green, rollout: 100 } ]
    segments:
      - key: internal-users
        name: Internal users
        match_type: ALL_MATCH_TYPE
        constraints:
          - { type: STRING_COMPARISON_TYPE, property: email, operator: suffix, value: "@acme.com" }
    ---
    namespace: staging
    flags:
      - key: color
        type: VARIANT_FLAG_TYPE
    """
)


def test_valid_stream_summary() -> None:
    result = validate_import(VALID)
    assert result.valid, result.errors
    s = result.summary
    assert s is not None
    assert (s.version, s.documents, s.namespaces, s.flags, s.segments) == ("1.4", 2, ("production", "staging"), 3, 1)
    assert "production, staging" in result.message()


def test_minimal_and_default_namespace() -> None:
    result = validate_import("flags:\n  - key: a\n")
    assert result.valid and result.summary and result.summary.namespaces == ("default",)
    assert result.summary.version == "1.4"
    # Unquoted version numbers are scalars "1.2" for Flipt's Go decoder too.
    assert validate_import("version: 1.2\nnamespace: x\n").summary.version == "1.2"


def _one_error(text: str) -> tuple[int | None, str]:
    result = validate_import(text)
    assert not result.valid and result.summary is None
    assert len(result.errors) == 1, result.errors
    return result.errors[0].line, result.errors[0].message


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("version: '1.4'\nflags:\n  - key: a\n    name: [unclosed\n", 5, "invalid YAML"),
        ("flags:\n  - key: a\n   bad: indent\n", 3, "invalid YAML"),
        ("version: '1.5'\n", 1, "unsupported version '1.5'"),
        ("version: '1.4'\nflag:\n  - key: a\n", 2, "unknown top-level key 'flag'"),
        ("flags:\n  - name: no key\n", 2, "flag has no key"),
        ("flags:\n  - key: ''\n", 2, "flag key must be a non-empty string"),
        ("flags:\n  - key: a\n    type: TOGGLE\n", 3, "'TOGGLE' is not one of VARIANT_FLAG_TYPE, BOOLEAN_FLAG_TYPE"),
        ("segments:\n  - key: s\n  - name: x\n", 3, "segment has no key"),
        ("segments:\n  - key: s\n    match_type: SOME\n", 3, "is not one of ALL_MATCH_TYPE"),
        ("namespace:\n  name: Prod\n", 2, "namespace has no key"),
        ("namespace: [a, b]\n", 1, "namespace (a key string"),
        ("version: '1.3'\nnamespace: {key: p}\n", 2, "namespace as a mapping needs version 1.4"),
        ("flags:\n  - key: a\n  - key: a\n", 3, "flag 'a' appears twice"),
        ("flags: {key: a}\n", 1, "must be a list"),
        ("flags:\n  - key: a\nflags: []\n", 3, "defined twice"),
        ("- just\n- a list\n", 1, "a document must be a mapping"),
        (
            "flags:\n  - key: c\n    variants: [{key: blue}]\n    rules:\n"
            "      - segment: s\n        distributions: [{variant: red, rollout: 100}]\n",
            6,
            "variant 'red' is not defined",
        ),
        ("flags:\n  - key: c\n    rollouts:\n      - description: neither\n", 4, "exactly one of segment or threshold"),
    ],
)
def test_invalid_documents(text: str, line: int, fragment: str) -> None:
    got_line, message = _one_error(text)
    assert got_line == line
    assert fragment in message


def test_line_numbers_count_across_documents() -> None:
    text = "version: '1.4'\nnamespace: a\n---\nnamespace: b\nflags:\n  - key: x\n    type: NOPE\n"
    result = validate_import(text)
    assert [(e.line, e.path) for e in result.errors] == [(7, "doc 2: flags[0].type")]
    assert str(result.errors[0]).startswith("line 7: doc 2: flags[0].type: 'NOPE'")


def test_version_on_a_later_document_is_a_warning() -> None:
    result = validate_import("version: '1.4'\nnamespace: a\n---\nversion: '1.4'\nnamespace: b\n")
    assert result.valid
    assert [(w.line, "read only from the first document" in w.message) for w in result.warnings] == [(4, True)]


def test_empty_stream() -> None:
    assert not validate_import("").valid
    assert not validate_import("---\n---\n").valid


def test_message_limits_errors() -> None:
    text = "flags:\n" + "".join(f"  - name: n{i}\n" for i in range(8))
    result = validate_import(text)
    assert len(result.errors) == 8
    assert result.message(limit=3).endswith("(and 5 more)")


def test_content_hash_is_stable() -> None:
    assert content_hash("a: 1\n") == content_hash(b"a: 1\n") == content_hash("a: 1\r\n")
    assert content_hash("a: 1\n") != content_hash("a: 2\n")
    assert len(content_hash("")) == 64


@pytest.mark.parametrize(
    ("written", "read_as"),
    [
        ("1.4", "1.4"), ("v1.4", "1.4"), ("1.4.0", "1.4"), (" 1.3 ", "1.3"), ("1", "1.0"),
        ("01.02", "1.2"), ("1.4.0+build.7", "1.4"), ("", "1.4"),
    ],
)
def test_version_is_read_as_flipt_reads_it(written, read_as):
    """blang/semver's ParseTolerant, then equality with a supported version (Flipt's importer)."""
    assert flipt_version(written) == read_as
    assert validate_import(f"version: '{written}'\nnamespace: x\n").summary.version == read_as


@pytest.mark.parametrize("written", ["1.5", "1.4.1", "1.4.0-rc1", "1.4-rc1", "2", "x1.4", "1.4.x"])
def test_versions_flipt_refuses(written):
    assert flipt_version(written) is None
    assert "unsupported version" in _one_error(f"version: '{written}'\n")[1]


def test_a_null_version_means_the_latest():
    assert validate_import("version:\nnamespace: x\n").summary.version == "1.4"
