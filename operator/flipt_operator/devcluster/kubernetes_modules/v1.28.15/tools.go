//go:build tools

// The commands `flipt-operator dev-cluster build` compiles; imported here so `go mod tidy`
// keeps every module they need.
package kubernetes

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
