"""Shapes shared by every kind: base model, references, durations, conditions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

# The duration pattern of Flipt's own config schema (config/flipt.schema.json): "30s", "1m30s",
# "2h", no decimals. Go's time.ParseDuration would take "1.5h", but Flipt's schema refuses it, so
# the CRD refuses it at apply time instead of the server failing at start.
DURATION_PATTERN = r"^([0-9]+(ns|us|µs|ms|s|m|h))+$"
# Go's time.ParseDuration syntax ("1.5s"), for the sidecar's own settings, which Flipt never reads.
GO_DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

# A DNS-1123 label: what Kubernetes accepts as a Service or Deployment name.
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# An object name (DNS-1123 subdomain).
OBJECT_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


def parse_duration(text: str) -> float:
    """Seconds in a Go duration string; raises ValueError on anything else."""
    if not text or not re.fullmatch(GO_DURATION_PATTERN, text):
        raise ValueError(f"not a duration: {text!r} (expected e.g. 30s, 1m30s, 2h)")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))


# The causes a failed rule may report (metav1.CauseType); the API server refuses any other.
RuleReason = Literal["FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired", "FieldValueDuplicate"]


@dataclass(frozen=True)
class ValidationRule:
    """A CEL rule the API server checks (`x-kubernetes-validations`, Kubernetes >= 1.28).

    The CRDs carry it where a model declares it (`validation_rules`); older servers get the CRDs
    without rules, so each rule has an operator-side check (in `rules/`, or the model's own
    validation) that reports the same mistake as Stalled.
    `field_path` is relative to where the rule sits (".cache"); `message` names the field and the fix.
    """

    rule: str
    message: str
    reason: RuleReason = "FieldValueInvalid"
    field_path: str | None = None

    def to_schema(self) -> dict[str, str]:
        out = {"rule": self.rule, "message": self.message, "reason": self.reason}
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out


VALIDATIONS_KEY = "x-kubernetes-validations"


def cel_pattern(pattern: str) -> str:
    """`pattern` as a CEL raw string literal, for `matches()`: no escape is read in it."""
    if "'" in pattern:
        raise ValueError(f"a CEL raw string cannot hold a quote: {pattern!r}")
    return f"r'{pattern}'"


def validation_rules(*rules: ValidationRule) -> dict[str, Any]:
    """The JSON-schema extra that puts `rules` on a model or field."""
    return {VALIDATIONS_KEY: [r.to_schema() for r in rules]}


Duration = Annotated[str, Field(pattern=DURATION_PATTERN)]
GoDuration = Annotated[str, Field(pattern=GO_DURATION_PATTERN)]
ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=OBJECT_NAME_PATTERN)]

# Kubernetes quantities are written as 1, 0.5 or "500m": an int-or-string in the schema.
Quantity = Annotated[
    int | str,
    WithJsonSchema({"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}),
]


class ApiModel(BaseModel):
    """Base for API types: camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        validate_default=True,
    )

    def to_api(self) -> dict[str, Any]:
        """The JSON document as the API server stores it (aliases, no unset optionals)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class LocalObjectReference(ApiModel):
    name: ObjectName = Field(description="Name of the object in the same namespace.")


class SecretKeyReference(ApiModel):
    name: ObjectName = Field(description="Name of the Secret in the same namespace.")
    key: str = Field(min_length=1, pattern=r"^[-._a-zA-Z0-9]+$", description="Key in the Secret's data.")


class ConfigMapKeyReference(ApiModel):
    name: ObjectName = Field(description="Name of the ConfigMap in the same namespace.")
    key: str = Field(min_length=1, pattern=r"^[-._a-zA-Z0-9]+$", description="Key in the ConfigMap's data.")


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ApiModel):
    """The metav1.Condition shape."""

    type: str = Field(description="Type of condition in CamelCase, e.g. Ready.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(description="A CamelCase word saying why the condition is in this state.")
    message: str = Field(default="", description="What happened and, when something is wrong, how to fix it.")
    last_transition_time: datetime = Field(description="When the status last changed.")
    observed_generation: int | None = Field(
        default=None, description="The metadata.generation this condition was computed from."
    )


class CommonStatus(ApiModel):
    observed_generation: int | None = Field(
        default=None, description="The metadata.generation the operator last reconciled."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Reconciling and Stalled (kstatus) plus the kind's domain conditions.",
    )
