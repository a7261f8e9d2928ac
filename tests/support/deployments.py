"""Nothing runs Deployments here: tests report progress the way the Deployment controller would."""

from kubernetes import client


def mark_available(api: client.ApiClient, namespace: str, name: str) -> None:
    apps = client.AppsV1Api(api)
    deployment = apps.read_namespaced_deployment(name, namespace)
    replicas = deployment.spec.replicas or 0
    status = {
        "observedGeneration": deployment.metadata.generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                        "message": "Deployment has minimum availability."}],
    }
    apps.patch_namespaced_deployment_status(name, namespace, {"status": status})


def read_deployment(api: client.ApiClient, namespace: str, name: str) -> client.V1Deployment | None:
    """The Deployment, or None when it does not exist."""
    try:
        return client.AppsV1Api(api).read_namespaced_deployment(name, namespace)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
