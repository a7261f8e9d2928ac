"""A local Kubernetes API server (etcd + kube-apiserver) for development and tests."""
