"""The CRDs in crds/ are generated from the models; a drift fails here. Their CEL validation rules:
where they sit, what they cost, and that the operator's own checks (its Stalled fallback for
servers that ignore the rules) read the same patterns."""

import re
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml

from flipt_operator.builders.crd_cli import WITHOUT_RULES, generated_files
from flipt_operator.builders.crds import all_crds
from flipt_operator.models.common import VALIDATIONS_KEY, cel_pattern
from flipt_operator.models.storage import (
    MAX_URL_LENGTH,
    PASSWORD_IN_REMOTE_PATTERN,
    PASSWORD_IN_URL_PATTERN,
    REMOTE_PATTERN,
    SQLITE_ON_VOLUME_PATTERN,
)

ROOT = Path(__file__).resolve().parents[2]


def test_crds_directory_matches_models():
    generated = generated_files()
    on_disk = {str(p.relative_to(ROOT / "crds")) for p in (ROOT / "crds").rglob("*.yaml")}
    assert on_disk == set(generated), "run `flipt-operator crds` to regenerate"
    assert {name for name in generated if name.startswith(WITHOUT_RULES + "/")}, "the set without rules is generated"
    for name, text in generated.items():
        assert (ROOT / "crds" / name).read_text() == text, f"{name} is stale: run `flipt-operator crds`"


def _walk(node, path=""):
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


def test_schemas_are_structural():
    for name, doc in all_crds().items():
        schema = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in _walk(schema):
            assert "$ref" not in node and "$defs" not in node and "title" not in node, (name, path)
            if "properties" in node:
                assert node.get("type") == "object", (name, path)
            if "anyOf" in node:
                assert node.get("x-kubernetes-int-or-string"), (name, path)
            for alt in node.get("oneOf", []):
                assert set(alt) == {"required"}, (name, path)


def test_every_field_has_a_description_for_kubectl_explain():
    for name, doc in all_crds().items():
        spec = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        for path, node in _walk(spec):
            for field, sub in node.get("properties", {}).items():
                assert sub.get("description"), f"{name}: {path}.{field} has no description"


def test_printer_columns_and_names():
    for doc in all_crds().values():
        version = doc["spec"]["versions"][0]
        columns = [c["name"] for c in version["additionalPrinterColumns"]]
        assert columns[-3:] == ["Ready", "Status", "Age"]
        assert "flipt" in doc["spec"]["names"]["categories"]
        assert version["subresources"] == {"status": {}}
        yaml.safe_dump(doc)  # serialisable


def test_git_remote_may_name_a_user_but_never_carry_a_password():
    from flipt_operator.models.storage import REMOTE_PATTERN

    for ok in ("https://git.example.com/f.git", "https://oauth2@git.example.com/f.git",
               "ssh://git@git.example.com:2222/f.git", "git://127.0.0.1:9418/f.git",
               "http://[::1]:8080/f.git", "git@github.com:acme/flags.git"):
        assert re.match(REMOTE_PATTERN, ok), ok
    for bad in ("https://user:pw@git.example.com/f.git", "ssh://git:pw@host/f.git", "https://git.example.com"):
        assert not re.match(REMOTE_PATTERN, bad), bad


REASONS = {"FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired", "FieldValueDuplicate"}


def _rules(validation_rules=True):
    for name, doc in all_crds(validation_rules=validation_rules).items():
        schema = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in _walk(schema):
            for rule in node.get(VALIDATIONS_KEY, []):
                yield name, path, node, rule


def test_every_kind_has_rules_and_each_says_what_to_fix():
    rules = list(_rules())
    assert {name for name, *_ in rules} == set(all_crds())
    for name, path, node, rule in rules:
        assert set(rule) <= {"rule", "message", "reason", "fieldPath"}, (name, path)
        assert rule["reason"] in REASONS, (name, path)
        # the message names the field it is about
        assert re.search(r"\b(spec\.[a-zA-Z.]+|metadata\.name)\b", rule["message"]), rule["message"]
        assert "\n" not in rule["message"]
        if "fieldPath" in rule:  # the API server refuses a path to a field the schema does not have
            target = node
            for field in rule["fieldPath"].lstrip(".").split("."):
                target = target.get("properties", {}).get(field)
                assert target is not None, (name, path, rule["fieldPath"])


def test_the_set_for_older_servers_has_no_rules_and_is_otherwise_the_same():
    assert list(_rules(validation_rules=False)) == []

    def one_ofs(docs):
        return {(name, path) for name, doc in docs.items() for path, node in _walk(doc) if "oneOf" in node}

    # ... except that oneOf, which older servers need for "exactly one of", gives way to the rule saying it
    without, with_rules = all_crds(validation_rules=False), all_crds()
    assert one_ofs(without) and not one_ofs(with_rules)
    for name, path in one_ofs(without):
        node = dict(_walk(with_rules[name]))[path]
        assert any("exists_one" in r["rule"] or "!=" in r["rule"] for r in node[VALIDATIONS_KEY]), (name, path)

    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in (VALIDATIONS_KEY, "oneOf")}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    assert strip(without) == strip(with_rules)


def test_every_string_a_rule_matches_has_a_max_length():
    """A string without maxLength is costed at the request size limit (3 MiB) per evaluation: the
    bound keeps the estimate (and the regular expression's work per request) small."""
    matched = 0
    for name, path, node, rule in _rules():
        for field in re.findall(r"self(?:\.(\w+))?\.matches\(", rule["rule"]):
            target = node["properties"][field] if field else node
            assert target.get("type") == "string" and 0 < target.get("maxLength", 0) <= MAX_URL_LENGTH, (name, path, field)
            matched += 1
    assert matched == 7


def test_cel_pattern_is_a_raw_string_and_refuses_quotes():
    assert cel_pattern("^a[?]b$") == "r'^a[?]b$'"
    with pytest.raises(ValueError):
        cel_pattern("it's")


def _password_per_urlsplit(url: str) -> bool:
    """What the pattern stands for, read by Python's URL parser: a non-empty password in the
    authority, or a query key password/authtoken."""
    parsed = urlsplit(url)
    query = {k.lower() for k, _ in parse_qsl(parsed.query, keep_blank_values=True)}
    return bool(parsed.password) or bool(query & {"password", "authtoken"})


URLS = [
    "postgres://flipt:hunter2@db:5432/flipt",
    "postgres://flipt@db:5432/flipt",
    "postgres://flipt:@db/flipt",
    "postgres://db:5432/flipt?sslmode=disable",
    "postgres://u@h:1@x/db",
    "postgresql://u:p@[::1]:5432/db",
    "postgres://u@[::1]:5432/db",
    "mysql://db:3306/flipt?password=hunter2",
    "mysql://db:3306/flipt?tls=true&PassWord=x",
    "mysql://db:3306/flipt?authtoken",
    "mysql://db:3306/flipt?passwords=x",
    "mysql://db:3306/flipt?x=password",
    "mysql://db:3306/flipt#?password=x",
    "cockroach://root@db:26257/flipt?sslmode=verify-full",
    "cockroachdb://root:pw@db:26257/flipt",
    "file:/var/opt/flipt/flipt.db",
    "file:/var/opt/flipt/flipt.db?password=x",
    "sqlite:///var/opt/flipt/flipt.db?_fk=1",
]


@pytest.mark.parametrize("url", URLS)
def test_the_database_url_password_pattern_means_what_urlsplit_reads(url):
    assert bool(re.search(PASSWORD_IN_URL_PATTERN, url)) == _password_per_urlsplit(url)


def test_the_remote_password_rule_refuses_what_the_remote_pattern_refuses_for_a_password():
    for bad in ("https://user:pw@git.example.com/f.git", "ssh://git:pw@host/f.git", "https://u:@h/f.git"):
        assert re.match(PASSWORD_IN_REMOTE_PATTERN, bad) and not re.match(REMOTE_PATTERN, bad), bad
    for ok in ("https://oauth2@git.example.com/f.git", "ssh://git@git.example.com:2222/f.git",
               "http://[::1]:8080/f.git", "git@github.com:acme/flags.git", "https://h:8443/a@b.git"):
        assert not re.match(PASSWORD_IN_REMOTE_PATTERN, ok), ok


@pytest.mark.parametrize("url,on_volume", [
    ("file:/var/opt/flipt/flipt.db", True),
    ("file:/var/opt/flipt/data/flipt.db?_fk=1", True),
    ("sqlite:///var/opt/flipt/f.db", True),
    ("file:/var/opt/flipt/.hidden.db", True),
    ("file:/var/opt/flipt/..x.db", True),
    ("file:/data/flipt.db", False),
    ("file:flipt.db", False),
    ("file:/var/opt/flipt", False),
    ("file:/var/opt/flipt/", False),
    ("file:/var/opt/flipt/../etc/flipt.db", False),
    ("file:/var/opt/flipt/./flipt.db", False),
    ("file:/var/opt/flipt//flipt.db", False),
    ("file:/var/opt/flipt.db", False),
    ("file://var/opt/flipt/f.db", False),
    ("file:////var/opt/flipt/f.db", False),
])
def test_the_sqlite_path_pattern(url, on_volume):
    assert bool(re.match(SQLITE_ON_VOLUME_PATTERN, url)) == on_volume


def test_which_servers_take_the_crds_with_rules():
    from flipt_operator.builders.crds import takes_validation_rules

    assert takes_validation_rules("v1.28.0") and takes_validation_rules("v1.35.4")
    assert takes_validation_rules("v1.30.2-eks-1")
    assert not takes_validation_rules("v1.27.9") and not takes_validation_rules("v1.20.2")
    assert not takes_validation_rules("v0.0.0-master") and not takes_validation_rules("")


def test_crds_command_names_the_set_a_server_takes(capsys):
    import argparse

    from flipt_operator.builders import crd_cli

    parser = argparse.ArgumentParser()
    crd_cli.add_arguments(parser)
    for version, expected in (("v1.20.2", f"crds/{WITHOUT_RULES}"), ("v1.35.4", "crds")):
        assert crd_cli.main(parser.parse_args(["--for-server", version])) == 0
        assert capsys.readouterr().out.strip() == expected
        assert (ROOT / expected / "flipt.io_fliptstorages.yaml").is_file()
