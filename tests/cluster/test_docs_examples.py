"""Every YAML example in docs/kinds.md is accepted by the API server (server-side dry run)."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster
KINDS_DOC = Path(__file__).resolve().parents[2] / "docs" / "kinds.md"
BLOCKS = re.findall(r"```yaml\n(.*?)```", KINDS_DOC.read_text(), re.S)


def test_the_page_has_examples_of_every_kind():
    text = "\n".join(BLOCKS)
    for kind in ("FliptCredential", "FliptStorage", "FliptEnvironment"):
        assert f"kind: {kind}" in text
    for backend in ("git:", "database:", "local:", "memory:"):
        assert backend in text


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_example_is_accepted(kube_cluster, namespace, block):
    result = kube_cluster.kubectl("apply", "--dry-run=server", "--validate=false", "-n", namespace, "-f", "-",
                                  input=block)
    assert result.returncode == 0, result.stderr
