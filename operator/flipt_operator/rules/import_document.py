"""Validation of Flipt export/import documents (`flipt export` output, `flipt import` input). Pure.

A stream holds one YAML document per namespace, separated by `---`. Flipt reads `version` only
from the first document (1.0–1.4 on v1.61.1; absent means the latest). Checks here stop what
`flipt import` would reject, with line numbers taken from the YAML nodes, so a bad ConfigMap is
reported on the FliptStorage instead of failing inside a Job.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

SUPPORTED_VERSIONS = ("1.0", "1.1", "1.2", "1.3", "1.4")
TOP_LEVEL_KEYS = ("version", "namespace", "flags", "segments")
NAMESPACE_KEYS = ("key", "name", "description")
FLAG_TYPES = ("VARIANT_FLAG_TYPE", "BOOLEAN_FLAG_TYPE")
MATCH_TYPES = ("ALL_MATCH_TYPE", "ANY_MATCH_TYPE")
COMPARISON_TYPES = (
    "STRING_COMPARISON_TYPE",
    "NUMBER_COMPARISON_TYPE",
    "BOOLEAN_COMPARISON_TYPE",
    "DATETIME_COMPARISON_TYPE",
    "ENTITY_ID_COMPARISON_TYPE",
)
SEGMENT_OPERATORS = ("OR_SEGMENT_OPERATOR", "AND_SEGMENT_OPERATOR")
DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True)
class ImportIssue:
    line: int | None
    """1-based line in the whole stream (None when not tied to a place)."""
    message: str
    path: str = ""
    """Where in the document, e.g. `doc 2: flags[3].type`."""

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "stream"
        return f"{where}: {self.path + ': ' if self.path else ''}{self.message}"


@dataclass(frozen=True)
class ImportSummary:
    version: str
    documents: int
    namespaces: tuple[str, ...]
    flags: int
    segments: int


@dataclass(frozen=True)
class ImportValidation:
    errors: tuple[ImportIssue, ...]
    warnings: tuple[ImportIssue, ...] = ()
    summary: ImportSummary | None = None

    @property
    def valid(self) -> bool:
        return not self.errors

    def message(self, limit: int = 5) -> str:
        """A short text for a condition message: the first `limit` errors."""
        if self.valid and self.summary:
            s = self.summary
            return (
                f"{s.documents} document(s), namespaces {', '.join(s.namespaces)}: "
                f"{s.flags} flag(s), {s.segments} segment(s)"
            )
        shown = "; ".join(str(e) for e in self.errors[:limit])
        more = f" (and {len(self.errors) - limit} more)" if len(self.errors) > limit else ""
        return shown + more


def content_hash(text: str | bytes) -> str:
    """SHA-256 hex digest of the document text, line endings normalised (CRLF and LF hash alike)."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    data = data.replace(b"\r\n", b"\n")
    return hashlib.sha256(data).hexdigest()


class _Checker:
    def __init__(self) -> None:
        self.errors: list[ImportIssue] = []
        self.warnings: list[ImportIssue] = []

    def error(self, node: Node | None, path: str, message: str) -> None:
        self.errors.append(ImportIssue(_line(node), message, path))

    def warn(self, node: Node | None, path: str, message: str) -> None:
        self.warnings.append(ImportIssue(_line(node), message, path))

    def mapping(self, node: Node, path: str, what: str) -> dict[str, tuple[Node, Node]] | None:
        """The mapping's entries by key (reporting duplicates and non-scalar keys), or None."""
        if not isinstance(node, MappingNode):
            self.error(node, path, f"{what} must be a mapping, not {_kind(node)}")
            return None
        entries: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.error(key_node, path, "mapping keys must be plain strings")
                continue
            if key_node.value in entries:
                self.error(key_node, path, f"key {key_node.value!r} is defined twice")
                continue
            entries[key_node.value] = (key_node, value_node)
        return entries

    def sequence(self, node: Node, path: str) -> list[Node]:
        if _is_null(node):
            return []
        if not isinstance(node, SequenceNode):
            self.error(node, path, f"must be a list, not {_kind(node)}")
            return []
        return list(node.value)

    def items(
        self, entries: dict[str, tuple[Node, Node]], name: str, path: str, what: str
    ) -> Iterator[tuple[Node, dict[str, tuple[Node, Node]], str]]:
        """Each mapping in the list `entries[name]`: (node, its entries, its path)."""
        if name not in entries:
            return
        for i, node in enumerate(self.sequence(entries[name][1], _join(path, name))):
            item_path = _join(path, f"{name}[{i}]")
            item = self.mapping(node, item_path, what)
            if item is not None:
                yield node, item, item_path

    def key_string(self, entries: dict[str, tuple[Node, Node]], owner: Node, path: str, what: str) -> str | None:
        if "key" not in entries:
            self.error(owner, path, f"{what} has no key")
            return None
        node = entries["key"][1]
        if not isinstance(node, ScalarNode) or _is_null(node) or not node.value.strip():
            self.error(node, f"{path}.key", f"{what} key must be a non-empty string")
            return None
        return str(node.value)

    def unique_key(
        self, entries: dict[str, tuple[Node, Node]], owner: Node, path: str, what: str, seen: Counter[str], scope: str
    ) -> None:
        """Check the item's key and that it is the only one with that key in `scope`."""
        key = self.key_string(entries, owner, path, what)
        if key is None:
            return
        seen[key] += 1
        if seen[key] == 2:
            self.error(entries["key"][1], f"{path}.key", f"{what} {key!r} appears twice in {scope}")

    def enum(self, entries: dict[str, tuple[Node, Node]], name: str, allowed: tuple[str, ...], path: str) -> None:
        if name not in entries or _is_null(entries[name][1]):
            return
        node = entries[name][1]
        if not isinstance(node, ScalarNode) or node.value not in allowed:
            shown = node.value if isinstance(node, ScalarNode) else _kind(node)
            self.error(node, f"{path}.{name}", f"{shown!r} is not one of {', '.join(allowed)}")


def _line(node: Node | None) -> int | None:
    return node.start_mark.line + 1 if node is not None and node.start_mark is not None else None


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if _is_null(node):
        return "empty"
    return f"the scalar {node.value!r}"


def validate_import(text: str) -> ImportValidation:
    """Validate a Flipt import stream; errors carry 1-based line numbers of the stream."""
    try:
        documents = [d for d in yaml.compose_all(text, Loader=yaml.SafeLoader)]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = " ".join(filter(None, [exc.context, exc.problem]))
        return ImportValidation(errors=(ImportIssue(line, f"invalid YAML: {problem}"),))
    except yaml.YAMLError as exc:
        return ImportValidation(errors=(ImportIssue(None, f"invalid YAML: {exc}"),))

    check = _Checker()
    docs = [d for d in documents if d is not None and not _is_null(d)]
    if not docs:
        return ImportValidation(errors=(ImportIssue(None, "no documents: the stream is empty"),))

    version = SUPPORTED_VERSIONS[-1]
    namespaces: list[str] = []
    flags_by_ns: dict[str, Counter[str]] = {}
    segments_by_ns: dict[str, Counter[str]] = {}
    total_flags = total_segments = 0

    for index, doc in enumerate(docs, start=1):
        where = f"doc {index}" if len(docs) > 1 else ""
        entries = check.mapping(doc, where, "a document")
        if entries is None:
            continue
        for key, (key_node, _) in entries.items():
            if key not in TOP_LEVEL_KEYS:
                check.error(key_node, where, f"unknown top-level key {key!r} (expected {', '.join(TOP_LEVEL_KEYS)})")

        if "version" in entries:
            key_node, node = entries["version"]
            value = node.value if isinstance(node, ScalarNode) else None
            if index == 1:
                if _is_null(node):  # Flipt reads a null version as empty: the latest
                    value = ""
                supported = flipt_version(value) if value is not None else None
                if supported is None:
                    shown = value if value is not None else _kind(node)
                    check.error(node, _join(where, "version"),
                                f"unsupported version {shown!r} (supported: {', '.join(SUPPORTED_VERSIONS)})")
                else:
                    version = supported
            else:
                check.warn(key_node, _join(where, "version"),
                           "version is read only from the first document; Flipt ignores it here")

        namespace = _namespace(check, entries, where, version)
        namespaces.append(namespace)
        flag_keys = flags_by_ns.setdefault(namespace, Counter())
        segment_keys = segments_by_ns.setdefault(namespace, Counter())

        for flag, fe, path in check.items(entries, "flags", where, "a flag"):
            total_flags += 1
            check.unique_key(fe, flag, path, "flag", flag_keys, f"namespace {namespace!r}")
            check.enum(fe, "type", FLAG_TYPES, path)
            _variants_and_rules(check, fe, path)

        for segment, se, path in check.items(entries, "segments", where, "a segment"):
            total_segments += 1
            check.unique_key(se, segment, path, "segment", segment_keys, f"namespace {namespace!r}")
            check.enum(se, "match_type", MATCH_TYPES, path)
            for _, ce, cpath in check.items(se, "constraints", path, "a constraint"):
                check.enum(ce, "type", COMPARISON_TYPES, cpath)

    summary = None
    if not check.errors:
        summary = ImportSummary(
            version=version,
            documents=len(docs),
            namespaces=tuple(dict.fromkeys(namespaces)),
            flags=total_flags,
            segments=total_segments,
        )
    return ImportValidation(errors=tuple(check.errors), warnings=tuple(check.warnings), summary=summary)


_SEMVER = re.compile(
    r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
)


def flipt_version(text: str) -> str | None:
    """The supported version (`1.0`..`1.4`) that a document's `version` names, read the way Flipt
    reads it (blang/semver's ParseTolerant, then equality with a supported version): spaces and a
    leading `v` are dropped, leading zeros too, missing parts are 0 and build metadata is ignored;
    so `1.4`, `v1.4`, `1.4.0` and `1.4.0+x` all mean 1.4. An empty value means the latest.
    None when Flipt refuses it."""
    text = text.strip()
    if not text:
        return SUPPORTED_VERSIONS[-1]
    parts = text.removeprefix("v").split(".", 2)
    for i, part in enumerate(parts):
        if len(part) > 1:
            part = part.lstrip("0")
            parts[i] = part if part[:1].isdigit() else "0" + part
    if len(parts) < 3:
        if "+" in parts[-1] or "-" in parts[-1]:
            return None
        parts += ["0"] * (3 - len(parts))
    match = _SEMVER.fullmatch(".".join(parts))
    if match is None or match.group(4) is not None or match.group(3) != "0":
        return None
    short = f"{match.group(1)}.{match.group(2)}"
    return short if short in SUPPORTED_VERSIONS else None


def _join(where: str, path: str) -> str:
    if not where:
        return path
    return f"{where}: {path}" if where.startswith("doc ") and ":" not in where else f"{where}.{path}"


def _namespace(check: _Checker, entries: dict[str, tuple[Node, Node]], where: str, version: str) -> str:
    if "namespace" not in entries or _is_null(entries["namespace"][1]):
        return DEFAULT_NAMESPACE
    node = entries["namespace"][1]
    path = _join(where, "namespace")
    if isinstance(node, ScalarNode):
        if not node.value.strip():
            check.error(node, path, "namespace must not be empty")
            return DEFAULT_NAMESPACE
        return str(node.value)
    ne = check.mapping(node, path, "namespace (a key string or {key, name, description})")
    if ne is None:
        return DEFAULT_NAMESPACE
    if version < "1.4":
        check.error(node, path, f"namespace as a mapping needs version 1.4 (the stream says {version})")
    for key, (key_node, _) in ne.items():
        if key not in NAMESPACE_KEYS:
            check.error(key_node, path, f"unknown namespace field {key!r} (expected {', '.join(NAMESPACE_KEYS)})")
    return check.key_string(ne, node, path, "namespace") or DEFAULT_NAMESPACE


def _variants_and_rules(check: _Checker, fe: dict[str, tuple[Node, Node]], path: str) -> None:
    variants: Counter[str] = Counter()
    for variant, ve, vpath in check.items(fe, "variants", path, "a variant"):
        check.unique_key(ve, variant, vpath, "variant", variants, "the flag")
    for rule, re_, rpath in check.items(fe, "rules", path, "a rule"):
        if "segment" not in re_:
            check.error(rule, rpath, "rule has no segment")
        elif isinstance(re_["segment"][1], MappingNode):
            seg = check.mapping(re_["segment"][1], f"{rpath}.segment", "segment")
            if seg is not None:
                check.enum(seg, "operator", SEGMENT_OPERATORS, f"{rpath}.segment")
        for dist, de, dpath in check.items(re_, "distributions", rpath, "a distribution"):
            vnode = de.get("variant", (None, None))[1]
            if vnode is None or not isinstance(vnode, ScalarNode) or _is_null(vnode):
                check.error(dist, dpath, "distribution has no variant")
            elif variants and vnode.value not in variants:
                check.error(vnode, f"{dpath}.variant", f"variant {vnode.value!r} is not defined in the flag")
    for rollout, oe, opath in check.items(fe, "rollouts", path, "a rollout"):
        if ("segment" in oe) == ("threshold" in oe):
            check.error(rollout, opath, "rollout needs exactly one of segment or threshold")
