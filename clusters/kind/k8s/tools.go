//go:build tools

// Package k8s only pins the commands built from k8s.io/kubernetes, so that
// `go mod tidy` records every module they need in go.sum. One file for every
// line: each <version>/tools.go links here (pin-k8s.sh makes the link), so a
// command added here reaches every line at its next pin.
package k8s

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubeadm"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
