"""Nothing runs Deployments here: tests report progress the way the Deployment controller would."""

import threading

from kubernetes import client


def mark_available(api: client.ApiClient, namespace: str, name: str) -> None:
    apps = client.AppsV1Api(api)
    report_available(apps, apps.read_namespaced_deployment(name, namespace))


def report_available(apps: client.AppsV1Api, deployment: client.V1Deployment) -> None:
    name, namespace = deployment.metadata.name, deployment.metadata.namespace
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


class StandInDeploymentController(threading.Thread):
    """Reports every Deployment of a namespace available whenever its generation moves on, as
    the real controller would once its pods run. Use as a context manager."""

    def __init__(self, api: client.ApiClient, namespace: str, interval: float = 0.2) -> None:
        super().__init__(daemon=True, name=f"deployment-controller-{namespace}")
        self.apps, self.namespace, self.interval = client.AppsV1Api(api), namespace, interval
        self.stopped, self.writes = threading.Event(), 0

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                deployments = self.apps.list_namespaced_deployment(self.namespace).items
            except Exception:  # noqa: BLE001 - the API server may be restarting: try again next round
                deployments = []
            for deployment in deployments:
                if (deployment.status.observed_generation or 0) < deployment.metadata.generation:
                    try:
                        report_available(self.apps, deployment)
                        self.writes += 1
                    except Exception:  # noqa: BLE001 - changed meanwhile or API down: the next round sees it
                        pass
            self.stopped.wait(self.interval)

    def __enter__(self) -> "StandInDeploymentController":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.join(timeout=5)
