"""The kopf settings the operator starts with: what the API server filters for it."""

from __future__ import annotations

import kopf
from kopf._cogs.structs.references import Resource  # kopf's own resource type, to ask its settings

from flipt_operator.handlers.main import configure_settings

MANAGED = "app.kubernetes.io/managed-by=flipt-operator"


def test_our_children_are_selected_by_label_on_the_server():
    settings = kopf.OperatorSettings()
    configure_settings(settings)
    selectors = settings.watching.label_selectors
    assert selectors.collect(Resource("apps", "v1", "deployments")) == [MANAGED]
    assert selectors.collect(Resource("batch", "v1", "jobs")) == [MANAGED]
    # The users' objects carry no label of ours: filtered by name in the operator instead; of
    # the ConfigMaps, our servers' own are left out on the server side.
    assert selectors.collect(Resource("", "v1", "configmaps")) == [MANAGED.replace("=", "!=")]
    for resource in (Resource("", "v1", "secrets"), Resource("flipt.io", "v1alpha1", "fliptenvironments")):
        assert selectors.collect(resource) == []


def test_kopf_requests_get_the_connect_bound():
    settings = kopf.OperatorSettings()
    configure_settings(settings)
    assert settings.networking.connect_timeout == 5.0
    assert settings.networking.request_timeout == 60
