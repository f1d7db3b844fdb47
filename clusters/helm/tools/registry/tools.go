//go:build tools

// Package registry only pins the command built from the CNCF distribution registry,
// so that `go mod tidy` records every module it needs in go.sum.
package registry

import _ "github.com/distribution/distribution/v3/cmd/registry"
