"""Bind these in a test module to run its tests on the bare cluster (the current API server alone,
no controllers, the CRDs without CEL rules: see kube_fixtures.bare_kube_cluster) under the names
the tests use:

    kube_cluster = on_bare_cluster.kube_cluster
    namespace = on_bare_cluster.namespace
    operator = on_bare_cluster.operator

For tests that report a controller's (or the kubelet's) progress by hand, which the real one on the
session's cluster would overwrite.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def kube_cluster(bare_kube_cluster):
    return bare_kube_cluster


@pytest.fixture
def namespace(bare_namespace):
    return bare_namespace


@pytest.fixture(scope="module")
def operator(bare_operator):
    return bare_operator
