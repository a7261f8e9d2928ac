"""The CRDs in crds/ are generated from the models; a drift fails here."""

from pathlib import Path

import yaml

from flipt_operator.builders.crd_cli import render
from flipt_operator.builders.crds import all_crds

ROOT = Path(__file__).resolve().parents[2]


def test_crds_directory_matches_models():
    generated = all_crds()
    on_disk = {p.name for p in (ROOT / "crds").glob("*.yaml")}
    assert on_disk == set(generated), "run `flipt-operator crds` to regenerate"
    for name, doc in generated.items():
        assert (ROOT / "crds" / name).read_text() == render(doc), f"{name} is stale: run `flipt-operator crds`"


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
    import re

    from flipt_operator.models.storage import REMOTE_PATTERN

    for ok in ("https://git.example.com/f.git", "https://oauth2@git.example.com/f.git",
               "ssh://git@git.example.com:2222/f.git", "git://127.0.0.1:9418/f.git",
               "http://[::1]:8080/f.git", "git@github.com:acme/flags.git"):
        assert re.match(REMOTE_PATTERN, ok), ok
    for bad in ("https://user:pw@git.example.com/f.git", "ssh://git:pw@host/f.git", "https://git.example.com"):
        assert not re.match(REMOTE_PATTERN, bad), bad
