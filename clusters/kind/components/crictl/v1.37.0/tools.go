//go:build tools

// Package crictl only pins the command built from sigs.k8s.io/cri-tools, so that
// `go mod tidy` records every module it needs in go.sum.
package crictl

import _ "sigs.k8s.io/cri-tools/cmd/crictl"
