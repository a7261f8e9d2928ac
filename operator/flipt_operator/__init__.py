"""flipt-operator: runs the storage side of Flipt feature-flag servers on Kubernetes."""

GROUP = "flipt.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
__version__ = "0.1.0"
