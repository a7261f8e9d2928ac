"""The Go modules the dev cluster builds Kubernetes from (devcluster/kubernetes_modules/<release>/):
each pins its release and the published staging modules of that same release, so a build never
mixes releases; the binaries are stamped with the release the operator reads from /version."""

from __future__ import annotations

import re

import pytest

from flipt_operator.devcluster.build import (
    CURRENT_KUBERNETES,
    FALLBACK_KUBERNETES,
    KUBERNETES_MODULES,
    RELEASES,
    BuildError,
    _version_ldflags,
    build_kubernetes,
)
from flipt_operator.models.plan import supports_native_sidecars


@pytest.mark.parametrize("release", RELEASES)
def test_each_release_has_a_module_pinning_it_and_its_staging_modules(release):
    module = KUBERNETES_MODULES / release
    go_mod = (module / "go.mod").read_text()
    assert re.search(rf"^require k8s\.io/kubernetes {re.escape(release)}$", go_mod, re.M), go_mod[:400]
    staging = re.findall(r"^\s*(k8s\.io/[\w-]+) => (k8s\.io/[\w-]+) (\S+)$", go_mod, re.M)
    assert len(staging) >= 25
    expected = "v0." + release.removeprefix("v1.")
    assert all(old == new and version == expected for old, new, version in staging), staging
    assert f"k8s.io/kubernetes {release} h1:" in (module / "go.sum").read_text()
    for command in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        assert f'"k8s.io/kubernetes/cmd/{command}"' in (module / "tools.go").read_text()


def test_the_two_releases_are_the_two_sidecar_paths():
    assert supports_native_sidecars(CURRENT_KUBERNETES)
    assert not supports_native_sidecars(FALLBACK_KUBERNETES)


def test_the_binaries_report_their_release():
    flags = _version_ldflags("v1.28.15")
    assert "-X k8s.io/component-base/version.gitVersion=v1.28.15" in flags
    assert "-X k8s.io/component-base/version.gitMajor=1" in flags
    assert "-X k8s.io/component-base/version.gitMinor=28" in flags


def test_a_release_without_a_module_is_refused_by_name():
    with pytest.raises(BuildError, match=r"no module for Kubernetes v1\.20\.2"):
        build_kubernetes("v1.20.2")
