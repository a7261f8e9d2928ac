"""docs/troubleshooting.md lists every condition reason the code can produce.

Reasons are CamelCase string literals in the modules that decide statuses; the few CamelCase
literals there that are not reasons (kinds, condition types, internal states) are listed below.
"""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "flipt_operator"
SOURCES = [
    PACKAGE / "builders" / "status_decisions.py",
    PACKAGE / "builders" / "status.py",
    *sorted((PACKAGE / "rules").glob("*.py")),
    *sorted((PACKAGE / "handlers").glob("*.py")),
    PACKAGE / "clients" / "sql.py",
    PACKAGE / "clients" / "redis_cache.py",
]
CAMEL = re.compile(r"^[A-Z][A-Za-z0-9]*[a-z][A-Za-z0-9]*$")
NOT_REASONS = {
    # kinds
    "FliptCredential", "FliptEnvironment", "FliptStorage", "ConfigMap", "Deployment", "Job", "Namespace",
    "Secret", "Service", "ServiceAccount",
    # Event types, condition statuses
    "Normal", "Warning", "True", "False", "Unknown",
    # condition types that are never a reason
    "Reconciling", "Stalled", "ServerAvailable", "MigrationsApplied", "DatabaseReachable", "CacheReady",
    # Job conditions and internal states, policy values, product names
    "Complete", "Succeeded", "Running", "Fresh", "UpToDate", "Pending", "Dirty", "Manual", "Redis",
}


def reasons_in_source() -> dict[str, str]:
    found = {}
    for path in SOURCES:
        if not path.exists():
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and CAMEL.match(node.value):
                if node.value not in NOT_REASONS:
                    found.setdefault(node.value, f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_every_reason_is_in_the_table():
    table = (ROOT / "docs" / "troubleshooting.md").read_text()
    listed = set(re.findall(r"^\| `([A-Za-z0-9]+)` \|", table, re.M))
    missing = {r: where for r, where in reasons_in_source().items() if r not in listed}
    assert not missing, f"add these reasons to docs/troubleshooting.md: {missing}"


def test_table_is_sorted_without_duplicates():
    table = (ROOT / "docs" / "troubleshooting.md").read_text()
    rows = re.findall(r"^\| `([A-Za-z0-9]+)` \|", table, re.M)
    assert rows == sorted(rows, key=str.lower) and len(rows) == len(set(rows))
