"""CustomResourceDefinitions generated from the pydantic models.

Pydantic emits JSON Schema with $refs, nullable anyOfs and titles; Kubernetes wants a
structural OpenAPI v3 schema with everything inlined. This module converts one to the other.
"""

from __future__ import annotations

import copy
from typing import Any

from .. import GROUP, VERSION
from ..models.common import VALIDATIONS_KEY, ApiModel
from ..models.kinds import ALL_KINDS, KindInfo
from ..models.plan import server_release

CATEGORY = "flipt"
# CEL rules with `reason` and `fieldPath` need this release; older servers get CRDs without rules.
MIN_VERSION_FOR_RULES = (1, 28)
_DROP_KEYS = {"title", "$defs"}


def takes_validation_rules(git_version: str) -> bool:
    """Whether an API server of this version (`/version` gitVersion) takes the CRDs with rules."""
    release = server_release(git_version)
    return release is not None and release >= MIN_VERSION_FOR_RULES


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").split("/")[-1]])
        # A field's own description wins over the referenced model's docstring.
        node = {**target, **{k: v for k, v in node.items() if k in ("description", "default")}}
    if "allOf" in node and len(node["allOf"]) == 1:
        inner = node.pop("allOf")[0]
        node = {**inner, **node}
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        options = [o for o in node["anyOf"] if o != {"type": "null"}]
        if len(options) == 1:
            del node["anyOf"]
            return _resolve({**options[0], **node}, defs)
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if node.get("default", 0) in (None, "", [], {}):
        # kube-apiserver 1.20 reads an empty default as null and refuses the CRD.
        del node["default"]
    for key in _DROP_KEYS:
        node.pop(key, None)
    if "properties" in node:
        node.setdefault("type", "object")
    return {k: _resolve(v, defs) if isinstance(v, (dict, list)) else v for k, v in node.items()}


def _condition_list_markers(schema: dict[str, Any]) -> None:
    """Conditions are a map keyed by type (metav1.Condition convention)."""
    conditions = schema.get("properties", {}).get("conditions")
    if conditions:
        conditions["x-kubernetes-list-type"] = "map"
        conditions["x-kubernetes-list-map-keys"] = ["type"]


def _without(key: str, node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without(key, v) for k, v in node.items() if k != key}
    if isinstance(node, list):
        return [_without(key, v) for v in node]
    return node


def _rules_instead_of_one_of(node: Any) -> Any:
    """Drop `oneOf` where the node has CEL rules: our `oneOf`s only say "exactly one of", which a
    rule on the same node says readably, and a `oneOf` failing with "Required value" stops the API
    server from evaluating any rule ("some validation rules were not checked")."""
    if isinstance(node, dict):
        drop = VALIDATIONS_KEY in node
        return {k: _rules_instead_of_one_of(v) for k, v in node.items() if not (drop and k == "oneOf")}
    if isinstance(node, list):
        return [_rules_instead_of_one_of(v) for v in node]
    return node


def structural_schema(model: type[ApiModel], *, defaults: bool = True) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    schema: dict[str, Any] = _resolve(raw, raw.get("$defs", {}))
    schema.setdefault("type", "object")
    return schema if defaults else _without("default", schema)


def crd_for(kind: KindInfo, *, validation_rules: bool = True) -> dict[str, Any]:
    """The CRD of `kind`; `validation_rules=False` leaves out every CEL rule (for servers before
    MIN_VERSION_FOR_RULES, which refuse or drop them), the rest is the same document."""
    # Defaults in status would be applied to objects the operator has not seen yet.
    status = structural_schema(kind.status, defaults=False)
    _condition_list_markers(status)
    status["description"] = "Observed state, written by the operator."
    spec = structural_schema(kind.spec)
    spec["description"] = kind.description
    schema: dict[str, Any] = {
        "type": "object",
        "description": kind.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    if kind.rules:
        schema[VALIDATIONS_KEY] = [r.to_schema() for r in kind.rules]
    schema = _rules_instead_of_one_of(schema) if validation_rules else _without(VALIDATIONS_KEY, schema)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{kind.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {
                            "name": c.name,
                            "type": c.type,
                            "jsonPath": c.json_path,
                            **({"description": c.description} if c.description else {}),
                            **({"priority": c.priority} if c.priority else {}),
                        }
                        for c in kind.columns
                    ],
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def all_crds(*, validation_rules: bool = True) -> dict[str, dict[str, Any]]:
    """File name -> CRD document."""
    return {f"{GROUP}_{kind.plural}.yaml": crd_for(kind, validation_rules=validation_rules) for kind in ALL_KINDS}
