//go:build tools

// Package helm only pins the command built from helm.sh/helm/v4, so that
// `go mod tidy` records every module it needs in go.sum.
package helm

import _ "helm.sh/helm/v4/cmd/helm"
