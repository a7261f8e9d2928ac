"""The Argo CD health checks in docs/argocd-health.md, run in a real Lua runtime (lupa)."""

from pathlib import Path

import lupa  # a pinned test extra: missing means a broken install, not a skip
import pytest
import yaml

DOC = Path(__file__).resolve().parents[2] / "docs" / "argocd-health.md"
KINDS = ("FliptCredential", "FliptStorage", "FliptEnvironment")


def scripts() -> dict[str, str]:
    text = DOC.read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    data = yaml.safe_load(block)["data"]
    return {key.rsplit("_", 1)[1]: script for key, script in data.items()}


def health(script: str, obj: dict) -> dict:
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    fn = lua.eval(f"function(obj)\n{script}\nend")
    result = fn(lua.table_from(obj, recursive=True))
    return dict(result)


def cond(type_, status, reason="R", message="m"):
    return {"type": type_, "status": status, "reason": reason, "message": message}


def obj(*conditions, generation=1, observed=1):
    status = {"observedGeneration": observed, "conditions": list(conditions)} if conditions else {}
    return {"metadata": {"name": "x", "generation": generation}, "status": status}


def test_one_check_per_kind_with_the_same_rule():
    found = scripts()
    assert set(found) == set(KINDS)
    assert len(set(found.values())) == 1


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("body, expected", [
    (obj(cond("Ready", "True", "Serving", "served")), ("Healthy", "served")),
    (obj(cond("Ready", "False", "StorageNotFound", "create it"), cond("Stalled", "True", "StorageNotFound", "create it")),
     ("Degraded", "create it")),
    (obj(cond("Ready", "False"), cond("Reconciling", "True", "Progressing")), ("Progressing", "m")),
    (obj(cond("Ready", "True"), generation=2, observed=1), ("Progressing", None)),
    ({"metadata": {"name": "x", "generation": 1}}, ("Progressing", None)),
    (obj(), ("Progressing", None)),
])
def test_health(kind, body, expected):
    result = health(scripts()[kind], body)
    assert result["status"] == expected[0]
    if expected[1] is not None:
        assert result["message"] == expected[1]
