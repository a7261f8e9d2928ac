"""docs/reference/<kind>.md are generated from the models; a drift fails here."""

from pathlib import Path

from flipt_operator.builders.crds import all_crds
from flipt_operator.builders.reference_docs import all_pages

ROOT = Path(__file__).resolve().parents[2]


def test_reference_pages_match_the_models():
    pages = all_pages()
    on_disk = {p.name for p in (ROOT / "docs" / "reference").glob("*.md")}
    assert on_disk == set(pages), "run `flipt-operator docs`"
    for name, text in pages.items():
        assert (ROOT / "docs" / "reference" / name).read_text() == text, f"{name} is stale: run `flipt-operator docs`"


def _fields(node, path):
    for name, sub in node.get("properties", {}).items():
        yield f"{path}.{name}"
        yield from _fields(sub, f"{path}.{name}")
        if sub.get("type") == "array":
            yield from _fields(sub.get("items") or {}, f"{path}.{name}[]")


def test_every_spec_and_status_field_is_listed():
    pages = all_pages()
    for doc in all_crds().values():
        kind = doc["spec"]["names"]["kind"]
        page = pages[f"{kind.lower()}.md"]
        props = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
        for part in ("spec", "status"):
            for field in _fields(props[part], part):
                assert f"| `{field}` |" in page, f"{kind}: {field} missing"
